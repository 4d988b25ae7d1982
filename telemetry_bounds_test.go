package herald_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// A token row written around Herald with a platform Herald never stores
// (two kilobytes of it, each such row another): the platform named the
// alarm's metric label and the push span's attribute, so each row made a
// series of its own with a label of kilobytes. A platform Herald does not
// know is "unknown" wherever telemetry names it.
func TestAPlatformNoHeraldWroteNeverBecomesAMetricLabelOrASpanAttribute(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()); _ = tp.Shutdown(context.Background()) })
	cfg := fastConfig()
	cfg.MeterProvider, cfg.TracerProvider = mp, tp
	h := newHarness(t, cfg)
	tokens := h.registerTokens("author", 1)
	h.fake.FailToken(tokens[0], testutil.Fault{Code: testutil.FaultThirdPartyAuth, Times: 1})
	hostile := "ios" + strings.Repeat("x", 2000)
	_, err := h.pool.Exec(context.Background(), `UPDATE herald_device_tokens SET platform = $1`, hostile)
	require.NoError(t, err)
	h.run()
	ns := h.raise(true, comment("c1", "ann", "author"))
	h.waitStatuses(ns[0], map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 30*time.Second)

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	alarms := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				for _, kv := range dp.Attributes.ToSlice() {
					assert.NotContains(t, kv.Value.Emit(), "xxxx", "%s{%s}", m.Name, kv.Key)
					if kv.Key == "herald.alarm" {
						alarms++
						assert.Equal(t, "platform_auth:unknown", kv.Value.AsString())
					}
				}
			}
		}
	}
	assert.Equal(t, 1, alarms, "the alarm is counted")
	pushes := 0
	for _, s := range exporter.GetSpans() {
		for _, kv := range s.Attributes {
			assert.NotContains(t, kv.Value.Emit(), "xxxx", "%s %s", s.Name, kv.Key)
			if kv.Key == "herald.platform" {
				pushes++
				assert.Equal(t, "unknown", kv.Value.AsString())
			}
		}
	}
	assert.Equal(t, 2, pushes, "the refused push and the one sent")
}
