package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
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

// benchTelemetry is what a host that exports everything runs: the
// OpenTelemetry SDK's providers with real exporters, to a collector that
// discards what it receives. Spans: a parent-based ratio sampler (every
// raise, relay and push at -trace-sample 1), a batch processor, the OTLP/HTTP exporter (protobuf) posting to
// a local server. Metrics: the Prometheus exporter, scraped over HTTP every
// second (a scraper usually asks every 15 s).
type benchTelemetry struct {
	mp     *sdkmetric.MeterProvider
	tp     *sdktrace.TracerProvider
	server *http.Server
	stop   context.CancelFunc
	done   sync.WaitGroup
}

func newBenchTelemetry(sample float64) (*benchTelemetry, error) {
	registry := prometheus.NewRegistry()
	metrics, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return nil, fmt.Errorf("metric exporter: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("collector: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/v1/traces", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})
	t := &benchTelemetry{server: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = t.server.Serve(ln) }()
	spans, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpoint(ln.Addr().String()), otlptracehttp.WithInsecure())
	if err != nil {
		_ = t.server.Close()
		return nil, fmt.Errorf("span exporter: %w", err)
	}
	t.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	t.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(sample))))
	ctx, stop := context.WithCancel(context.Background())
	t.stop = stop
	t.done.Add(1)
	go func() {
		defer t.done.Done()
		url := "http://" + ln.Addr().String() + "/metrics"
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return
			}
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		}
	}()
	return t, nil
}

// apply sets the providers in cfg.
func (t *benchTelemetry) apply(cfg *herald.Config) {
	if t == nil {
		return
	}
	cfg.MeterProvider, cfg.TracerProvider = t.mp, t.tp
}

// shutdown flushes and stops both providers and the collector.
func (t *benchTelemetry) shutdown() error {
	if t == nil {
		return nil
	}
	t.stop()
	t.done.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(t.tp.Shutdown(ctx), t.mp.Shutdown(ctx), t.server.Shutdown(ctx))
}
