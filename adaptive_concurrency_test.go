package herald_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// broadcastHarness is a Herald whose rules broadcast an Announcement to
// every android device, with n devices registered and a fake FCM that
// takes latency to answer.
func broadcastHarness(t *testing.T, cfg herald.Config, n int, latency time.Duration) *harness {
	t.Helper()
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{Latency: latency, DontRecord: true})
	client, err := herald.NewFCM(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, func(a Announcement) ([]notification.Draft, error) {
		return []notification.Draft{{Type: "announcement", Broadcast: &notification.Audience{},
			Content: notification.Content{Title: "News", Body: a.Text}}}, nil
	}))
	hd, err := herald.New(pool, client, rules, cfg)
	require.NoError(t, err)
	tokens := make([]*notification.DeviceToken, 0, n)
	now := time.Now()
	for i := range n {
		tok, err := notification.NewDeviceToken(fmt.Sprintf("user-%d", i), fmt.Sprintf("tok-%05d", i), notification.PlatformAndroid, now)
		require.NoError(t, err)
		tokens = append(tokens, tok)
	}
	require.NoError(t, adapters.NewPostgresDeviceTokenRepository(pool).UpsertMany(context.Background(), tokens))
	return &harness{t: t, pool: pool, fake: fake, herald: hd}
}

// sampleLimit records the largest and smallest in-flight limit h's sender
// reports, every 10 ms, until stop is closed.
func sampleLimit(h *herald.Herald, stop <-chan struct{}) (largest, smallest *atomic.Int64) {
	largest, smallest = &atomic.Int64{}, &atomic.Int64{}
	smallest.Store(1 << 62)
	go func() {
		for {
			if l := h.Stats().Sender.InFlightLimit; l > 0 {
				largest.Store(max(largest.Load(), l))
				smallest.Store(min(smallest.Load(), l))
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return largest, smallest
}

func TestWithMaxInFlightUnsetTheSenderRaisesItsConcurrencyToReachTheRateAtFCMsRoundTrip(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.RatePerMinute = 300_000 // 5,000/s: 500 in flight at 100 ms
	h := broadcastHarness(t, cfg, 4000, 100*time.Millisecond)
	h.run()
	stop := make(chan struct{})
	largest, _ := sampleLimit(h.herald, stop)

	ns := h.raise(true, Announcement{Text: "v2 is out"})
	testutil.WaitDelivered(t, h.pool, ns[0].ID(), 90*time.Second)
	close(stop)

	// At 32 in flight (the start) 4,000 pushes of 100 ms would take 12.5 s.
	assert.Greater(t, largest.Load(), int64(64), "the limit grew past twice its start of 32")
	assert.LessOrEqual(t, largest.Load(), int64(2048), "and stayed under the ceiling")
	assert.Equal(t, int64(4000), h.fake.AcceptedCount(), "every device got its push once")
	assert.Zero(t, h.herald.Stats().Sender.QuotaExceeded)
}

func TestWithMaxInFlightUnsetTheSenderShrinksItsConcurrencyWhileFCMAnswers503(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.RatePerMinute = 300_000
	cfg.FCM.SendTimeout = 8 * time.Second // the SDK waits 0 s, then 1 s, before its retries of a 503
	cfg.Sender.Lease = 20 * time.Second
	h := broadcastHarness(t, cfg, 30_000, 50*time.Millisecond)
	h.run()
	h.raise(true, Announcement{Text: "v2 is out"})
	require.Eventually(t, func() bool { return h.herald.Stats().Sender.InFlightLimit > 64 }, 60*time.Second, 10*time.Millisecond,
		"the limit grows while FCM answers")

	h.fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable, Every: 10}) // one request in ten
	var peak int64
	require.Eventually(t, func() bool {
		l := h.herald.Stats().Sender.InFlightLimit
		peak = max(peak, l)
		return l < peak*3/4
	}, 60*time.Second, 10*time.Millisecond, "one 503 in ten requests cuts the limit by a quarter")
}

func TestASetMaxInFlightIsAHardBound(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.MaxInFlight = 8
	h := broadcastHarness(t, cfg, 500, 20*time.Millisecond)
	h.run()
	stop := make(chan struct{})
	largest, smallest := sampleLimit(h.herald, stop)
	ns := h.raise(true, Announcement{Text: "v2 is out"})
	testutil.WaitDelivered(t, h.pool, ns[0].ID(), 60*time.Second)
	close(stop)
	assert.Equal(t, int64(8), largest.Load())
	assert.Equal(t, int64(8), smallest.Load())
}
