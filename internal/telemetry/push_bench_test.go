package telemetry_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/herald-push/herald/internal/telemetry"
)

// BenchmarkPush measures observing one push: metrics only (the no-op
// tracer), and metrics with a recorded span (SDK tracer, batch processor,
// an exporter that drops the batch).
func BenchmarkPush(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	id := uuid.Must(uuid.NewV7())
	info := telemetry.PushInfo{DeliveryID: 1, NotificationID: id, Token: "token-0123456789", Platform: "android",
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	for _, c := range []struct {
		name string
		tel  *telemetry.Telemetry
	}{
		{"metrics", telemetry.New(telemetry.Config{MeterProvider: mp, TracerProvider: noop.NewTracerProvider()})},
		{"metrics+spans", telemetry.New(telemetry.Config{MeterProvider: mp, TracerProvider: sdktrace.NewTracerProvider(
			sdktrace.WithBatcher(tracetest.NewNoopExporter()))})},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, span := c.tel.StartPush(ctx, info)
				span.EndPush("sent", "", "projects/p/messages/1")
			}
		})
	}
}
