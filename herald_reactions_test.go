package herald_test

import (
	"context"
	"fmt"
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

func TestFixedAPNsKeyNeedsNoRetryByHandAndAndroidNeverWaits(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.MaxInFlight = 1 // one push at a time: every iOS request is either a first rejection or a probe
	cfg.Sender.PlatformPause = 100 * time.Millisecond
	cfg.Sender.PlatformMaxPause = 400 * time.Millisecond
	cfg.Sender.Retry.MaxAttempts = 100 // probes rotate over the deliveries; none may run out here
	h := newHarness(t, cfg)
	ctx := context.Background()
	for i := range 3 {
		require.NoError(t, h.herald.Tokens().Register(ctx, "author", fmt.Sprintf("ios-%d", i), notification.PlatformIOS))
		require.NoError(t, h.herald.Tokens().Register(ctx, "author", fmt.Sprintf("android-%d", i), notification.PlatformAndroid))
		// The APNs key uploaded to Firebase has expired.
		h.fake.FailToken(fmt.Sprintf("ios-%d", i), testutil.Fault{Code: testutil.FaultThirdPartyAuth})
	}
	h.run()
	ns := h.raise(true, comment("m1", "ann", "author"), comment("m2", "ann", "author"), comment("m3", "ann", "author"))

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, tok := range []string{"android-0", "android-1", "android-2"} {
			assert.Len(c, h.fake.AcceptedFor(tok), 3, tok)
		}
		assert.GreaterOrEqual(c, h.herald.Stats().Sender.PlatformPauses, int64(4), "the pause doubled a few times")
	}, 15*time.Second, 20*time.Millisecond)
	st := h.herald.Stats().Sender
	assert.Zero(t, st.Failed, "rejected iOS pushes are retried, not failed")
	iosRequests := h.fake.Requests() - h.fake.AcceptedCount()
	assert.LessOrEqual(t, iosRequests, st.PlatformPauses+1,
		"while the key is rejected, iOS gets one request per pause (the probe), not one per delivery")

	// The operator uploads a new key. Nobody retries anything by hand.
	h.fake.ClearFaults()
	for _, n := range ns {
		h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 6}, 15*time.Second)
	}
	for _, tok := range []string{"ios-0", "ios-1", "ios-2"} {
		assert.Len(t, h.fake.AcceptedFor(tok), 3, tok)
	}
}

func TestAThrottledDevicesPushesGoOutSoonAfterFCMAcceptsItAgain(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	// One push at a time: while the device is throttled, each round of its
	// hold sends one request, and the rest of the claim is given back
	// unpushed. The limit is far above the requests that reach FCM here.
	cfg.Sender.MaxInFlight = 1
	cfg.Sender.DevicePerMinute = 40
	cfg.Sender.Retry = notification.RetryPolicy{MaxAttempts: 100, BaseDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond}
	h := newHarness(t, cfg)
	ctx := context.Background()
	const hot = "hot-device"
	require.NoError(t, h.herald.Tokens().Register(ctx, "hot-user", hot, notification.PlatformAndroid))
	h.fake.FailToken(hot, testutil.Fault{Code: testutil.FaultQuotaExceeded, RetryAfter: time.Second})
	h.run()
	var events []notification.Event
	for i := range 15 {
		events = append(events, comment(fmt.Sprintf("c%d", i), "ann", "hot-user"))
	}
	ns := h.raise(true, events...)

	// FCM throttles the device for two seconds (Retry-After 1 s): Herald
	// holds its pushes, and claims them all again at the end of each hold.
	time.Sleep(2 * time.Second)
	h.fake.ClearFaults()
	cleared := time.Now()
	requests := h.fake.Requests()
	require.Less(t, requests, int64(cfg.Sender.DevicePerMinute), "fewer requests reached FCM for the device than its limit")

	// Every push goes out within a few Retry-Afters of FCM accepting
	// again: pushes that were only claimed and given back, never sent,
	// do not use up the device's minute.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, len(ns), len(h.fake.AcceptedFor(hot)), "pushes accepted")
	}, 3*time.Second, 20*time.Millisecond, "the device's pushes after FCM accepted it again (%d requests before)", requests)
	t.Logf("all %d pushes sent %s after the throttle ended; %d requests while throttled", len(ns), time.Since(cleared), requests)
}
