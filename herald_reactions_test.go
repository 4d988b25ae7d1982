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

func TestOneThrottledDeviceDoesNotHoldUpPushesToHealthyDevices(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	const hot = "hot-device"
	require.NoError(t, h.herald.Tokens().Register(context.Background(), "hot-user", hot, notification.PlatformAndroid))
	h.registerTokens("author", 300)
	// The device is over FCM's per-device rate: every push to it gets
	// QUOTA_EXCEEDED with a Retry-After far longer than this test.
	h.fake.FailToken(hot, testutil.Fault{Code: testutil.FaultQuotaExceeded, RetryAfter: time.Minute})
	h.run()

	first := h.raise(true, comment("m0", "ann", "hot-user"))[0]
	h.waitStatuses(first, map[notification.DeliveryStatus]int{notification.StatusRetryScheduled: 1}, 10*time.Second)

	// Now 300 pushes to healthy devices, and one more to the hot device.
	ns := h.raise(true, comment("m1", "ann", "author"), comment("m2", "ann", "hot-user"))
	// Pausing all sending for the hot device's Retry-After would take a
	// minute; nothing holds them up now.
	h.waitStatuses(ns[0], map[notification.DeliveryStatus]int{notification.StatusSent: 300}, 20*time.Second)
	assert.EqualValues(t, 300, h.fake.AcceptedCount())

	throttled := h.deliveryFor(first, hot)
	require.NotNil(t, throttled)
	assert.Equal(t, notification.StatusRetryScheduled, throttled.Status())
	assert.Equal(t, "QUOTA_EXCEEDED", throttled.ErrorCode())
	assert.GreaterOrEqual(t, throttled.DueAt().Sub(throttled.UpdatedAt()), time.Minute, "retried no sooner than Retry-After")
	// The hot device's next push waits for its Retry-After, unattempted.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		held := h.deliveryFor(ns[1], hot)
		if assert.NotNil(c, held) {
			assert.Equal(c, notification.StatusPending, held.Status())
			assert.Zero(c, held.Attempts())
			assert.True(c, held.DueAt().After(time.Now().Add(30*time.Second)), "held until the device's Retry-After")
		}
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, int64(301), h.fake.Requests(), "one request to the hot device, one to each healthy device")
	st := h.herald.Stats().Sender
	assert.Equal(t, int64(1), st.QuotaExceeded)
	assert.Zero(t, st.QuotaPauses, "one device's throttling never pauses all sending")
}
