package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestAnFCMOutageSeesAFewDozenRequestsAndLosesNothing(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.MaxInFlight = 128
	cfg.Sender.Retry.MaxAttempts = 12
	cfg.FCM.BreakerOpenFor = 500 * time.Millisecond
	h := newHarness(t, cfg)
	h.registerTokens("author", 300)
	h.fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable}) // default SDK retries: up to 4 per push
	h.run()

	n := h.raise(true, comment("m1", "ann", "author"))[0]
	start := time.Now()
	require.Eventually(t, func() bool { return h.herald.Stats().Breaker == "open" }, 10*time.Second, time.Millisecond)
	t.Logf("breaker open after %v, %d requests", time.Since(start), h.fake.Requests())
	time.Sleep(4 * time.Second) // the outage goes on: probes only
	during := h.fake.Requests()
	t.Logf("requests during the outage: %d", during)
	assert.LessOrEqual(t, during, int64(50), "requests that reached the failing FCM")

	h.fake.ClearFaults()
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 300}, 60*time.Second)
	assert.Equal(t, int64(300), h.fake.AcceptedCount(), "each device once")
	ds, err := h.herald.ListDeliveries(context.Background(), n.ID())
	require.NoError(t, err)
	attempts := 0
	for _, d := range ds {
		attempts += d.Attempts()
	}
	// Pushes the breaker refused or cancelled count no attempt: only the
	// requests that reached FCM can have.
	assert.LessOrEqual(t, int64(attempts), 300+during)
	assert.Zero(t, h.herald.Stats().Sender.Failed)
}

func TestABriefCredentialsFailureLosesNoDelivery(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	h := newHarness(t, cfg)
	h.registerTokens("author", 100)
	h.fake.FailAll(testutil.Fault{Code: testutil.FaultUnauthenticated})
	h.run()

	n := h.raise(true, comment("m1", "ann", "author"))[0]
	require.Eventually(t, func() bool { return h.fake.Requests() > 0 }, 10*time.Second, time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	h.fake.ClearFaults()

	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 100}, 30*time.Second)
	stats := h.herald.Stats().Sender
	assert.Zero(t, stats.Failed)
	assert.Positive(t, stats.ConfigAlarms, "rejected credentials raise the configuration alarm")
	assert.Equal(t, int64(100), h.fake.AcceptedCount())
}

func TestA503RetryAfterOutlastingTheSendDeadlineIsHonoured(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.FCM.SendTimeout = 2 * time.Second
	h := newHarness(t, cfg)
	h.registerTokens("author", 1)
	tok := "author-device-0000"
	h.fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable, RetryAfter: time.Minute})
	h.run()

	n := h.raise(true, comment("m1", "ann", "author"))[0]
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		d := h.deliveryFor(n, tok)
		if assert.NotNil(c, d) {
			assert.Equal(c, notification.StatusRetryScheduled, d.Status())
		}
	}, 10*time.Second, 10*time.Millisecond)
	d := h.deliveryFor(n, tok)
	assert.Equal(t, "UNAVAILABLE", d.ErrorCode())
	assert.GreaterOrEqual(t, d.DueAt().Sub(d.UpdatedAt()), time.Minute, "due no sooner than Retry-After")
}

func TestA400WithoutFCMDetailFailsTheDeliveryAtOnce(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	h := newHarness(t, cfg)
	h.registerTokens("author", 1)
	tok := "author-device-0000"
	h.fake.FailAll(testutil.Fault{Code: testutil.FaultBadRequest})
	h.run()

	n := h.raise(true, comment("m1", "ann", "author"))[0]
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusFailed: 1}, 10*time.Second)
	d := h.deliveryFor(n, tok)
	assert.Equal(t, "INVALID_ARGUMENT", d.ErrorCode())
	assert.Equal(t, 1, d.Attempts())
	assert.Equal(t, int64(1), h.fake.Requests(), "not retried")
	assert.Equal(t, "closed", h.herald.Stats().Breaker)
}
