package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/herald-push/herald/notification"
)

// TestTheDeliveryLatencyOfAScheduledPushStartsAtItsSendTime: a push the
// host scheduled for later (Draft.SendAt) is not late by the time it was
// held: herald.delivery.latency measures from its send time, so that a
// campaign scheduled for tomorrow does not fire an alert on the latency's
// upper percentiles.
func TestTheDeliveryLatencyOfAScheduledPushStartsAtItsSendTime(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	cfg := fastConfig()
	cfg.MeterProvider = mp
	h := newDraftHarness(t, cfg)
	h.register("u", "tok", notification.PlatformAndroid)
	h.run()
	d := draft("u", "your trial ends soon")
	d.SendAt = time.Now().Add(4 * time.Second)
	n := h.notify(d)
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 15*time.Second)

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	var found bool
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "herald.delivery.latency" {
				continue
			}
			hist, ok := m.Data.(metricdata.Histogram[float64])
			require.True(t, ok, "%T", m.Data)
			for _, dp := range hist.DataPoints {
				found = found || dp.Count > 0
				max, ok := dp.Max.Value()
				require.True(t, ok)
				require.Less(t, max, 3.0, "seconds from the send time to FCM accepting the push, not from the raise 4 s before it")
			}
		}
	}
	require.True(t, found, "the push's latency was recorded")
}
