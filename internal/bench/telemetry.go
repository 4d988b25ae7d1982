package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/herald-push/herald"
)

// Values of -telemetry.
const (
	telemetryOff  = "off"
	telemetryOn   = "on"
	telemetryBoth = "both"
)

// telemetryRuns says in which order a scenario runs with telemetry off and
// on. "both" runs off, on, on, off (ABBA): a drift of the shared machine
// over the four runs weighs on both sides alike.
func telemetryRuns(mode string) []bool {
	switch mode {
	case telemetryOn:
		return []bool{true}
	case telemetryBoth:
		return []bool{false, true, true, false}
	default:
		return []bool{false}
	}
}

// benchTelemetry is what a run with telemetry on costs a host that exports
// everything: the OpenTelemetry SDK's providers with real exporters (the
// stdout ones, encoding every span and every metric collection as JSON)
// writing to a discarded sink; every push is sampled (the SDK's default
// sampler), spans go through a batch processor, and metrics are collected
// every second.
type benchTelemetry struct {
	mp *sdkmetric.MeterProvider
	tp *sdktrace.TracerProvider
}

func newBenchTelemetry() (*benchTelemetry, error) {
	spans, err := stdouttrace.New(stdouttrace.WithWriter(io.Discard))
	if err != nil {
		return nil, fmt.Errorf("span exporter: %w", err)
	}
	metrics, err := stdoutmetric.New(stdoutmetric.WithWriter(io.Discard))
	if err != nil {
		return nil, fmt.Errorf("metric exporter: %w", err)
	}
	return &benchTelemetry{
		mp: sdkmetric.NewMeterProvider(sdkmetric.WithReader(
			sdkmetric.NewPeriodicReader(metrics, sdkmetric.WithInterval(time.Second)))),
		tp: sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans)),
	}, nil
}

// apply sets the providers in cfg.
func (t *benchTelemetry) apply(cfg *herald.Config) {
	if t == nil {
		return
	}
	cfg.MeterProvider, cfg.TracerProvider = t.mp, t.tp
}

// shutdown flushes and stops both providers.
func (t *benchTelemetry) shutdown() error {
	if t == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(t.tp.Shutdown(ctx), t.mp.Shutdown(ctx))
}
