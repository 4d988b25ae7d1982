package telemetry_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/herald-push/herald/internal/telemetry"
)

// TestAPushAllocatesNothingForItsMetrics: with metrics on and tracing off
// (the no-op tracer), observing one push costs one allocation, the
// context the tracer API returns: its attribute set is made once per
// outcome and error class, its span options once.
func TestAPushAllocatesNothingForItsMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tel := telemetry.New(telemetry.Config{MeterProvider: mp, TracerProvider: noop.NewTracerProvider()})
	id := uuid.Must(uuid.NewV7())
	ctx := context.Background()
	push := func() {
		_, span := tel.StartPush(ctx, telemetry.PushInfo{DeliveryID: 1, NotificationID: id, Token: "t"})
		span.EndPush("retry_scheduled", "UNAVAILABLE", "")
	}
	push() // the first push of a class makes its attribute set
	allocs := testing.AllocsPerRun(1000, push)
	assert.LessOrEqual(t, allocs, 1.0, "allocations per observed push")

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(ctx, &rm))
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "messaging.client.sent.messages" {
				found = true
				sum := m.Data.(metricdata.Sum[int64])
				require.Len(t, sum.DataPoints, 1)
				assert.Equal(t, int64(1002), sum.DataPoints[0].Value)
			}
		}
	}
	assert.True(t, found)
}

// TestNilTelemetryObservesNothing: parts built without telemetry (tests,
// tools) call the same hooks safely.
func TestNilTelemetryObservesNothing(t *testing.T) {
	t.Parallel()
	var tel *telemetry.Telemetry
	ctx, span := tel.StartPush(context.Background(), telemetry.PushInfo{})
	assert.NotNil(t, ctx)
	span.EndPush("sent", "", "")
	_, r := tel.StartRelay(context.Background(), "x", nil)
	r.EndRelay(1, 1, 0, nil)
	_, raise := tel.StartRaise(context.Background())
	raise.EndRaise(1, 1, nil)
	tel.Alarm("x")
	tel.BreakerChanged("closed", "open")
}

// TestTokenHashIsHeraldsTokenHash: spans name a device as operators see it.
func TestTokenHashIsHeraldsTokenHash(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "tok_", telemetry.TokenHash("abc")[:4])
	assert.Len(t, telemetry.TokenHash("abc"), 16)
}

// TestTraceParentRoundTrips: the traceparent Raise stores is read back as
// the same span context by the push.
func TestTraceParentRoundTrips(t *testing.T) {
	t.Parallel()
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled})
	tp := telemetry.TraceParent(trace.ContextWithSpanContext(context.Background(), sc))
	got, ok := telemetry.ParseTraceParent(tp)
	require.True(t, ok, tp)
	assert.Equal(t, sc.TraceID(), got.TraceID())
	assert.Equal(t, sc.SpanID(), got.SpanID())
	assert.True(t, got.IsSampled())
	for _, bad := range []string{"", "01-" + tp[3:], tp[:54], strings.Replace(tp, "-", "_", 1)} {
		_, ok := telemetry.ParseTraceParent(bad)
		assert.False(t, ok, bad)
	}
}

// TestPushesOfAnUnsampledRaiseStartNoSpan: a raise the host's sampler
// dropped leaves its relay and pushes without spans (they would link to
// nothing), while a sampled raise's pushes are traced and linked.
func TestPushesOfAnUnsampledRaiseStartNoSpan(t *testing.T) {
	t.Parallel()
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	tel := telemetry.New(telemetry.Config{TracerProvider: tp, MeterProvider: noopmetric.NewMeterProvider()})
	const sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	const dropped = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	ctx := context.Background()

	_, span := tel.StartPush(ctx, telemetry.PushInfo{TraceParent: dropped})
	span.EndPush("sent", "", "")
	_, relay := tel.StartRelay(ctx, "m", map[string]string{"traceparent": dropped})
	relay.EndRelay(1, 1, 0, nil)
	assert.Empty(t, exporter.GetSpans())

	_, span = tel.StartPush(ctx, telemetry.PushInfo{TraceParent: sampled})
	span.EndPush("sent", "", "")
	_, relay = tel.StartRelay(ctx, "m", map[string]string{"traceparent": sampled})
	relay.EndRelay(1, 1, 0, nil)
	spans := exporter.GetSpans()
	require.Len(t, spans, 2)
	for _, s := range spans {
		require.Len(t, s.Links, 1, s.Name)
		assert.Equal(t, "b7ad6b7169203331", s.Links[0].SpanContext.SpanID().String())
	}
}

// TestDatabaseGaugesReadTheDatabaseAtMostOncePerInterval: however often a
// reader collects, the database is asked once per interval, and the last
// answer is shown in between.
func TestDatabaseGaugesReadTheDatabaseAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	tel := telemetry.New(telemetry.Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		TracerProvider: noop.NewTracerProvider()})
	reads := 0
	_, err := tel.ObserveDatabase(func(context.Context) (telemetry.DatabaseSnapshot, error) {
		reads++
		return telemetry.DatabaseSnapshot{Deliveries: map[string]int64{"pending": int64(reads)}}, nil
	}, time.Hour)
	require.NoError(t, err)
	var pending []int64
	for range 5 {
		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(context.Background(), &rm))
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name == "herald.deliveries" {
					pending = append(pending, m.Data.(metricdata.Gauge[int64]).DataPoints[0].Value)
				}
			}
		}
	}
	assert.Equal(t, 1, reads)
	assert.Equal(t, []int64{1, 1, 1, 1, 1}, pending)
}
