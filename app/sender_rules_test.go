package app_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// The sender's older rules (pauses, shutdown, leases, recording), on the
// in-memory fakes of sender_fakes_test.go with a clock that stands still.

// claimOnce lets only the first claim return deliveries, so a test sees
// what became of one claim without the sender claiming the same deliveries
// again.
type claimOnce struct {
	*memStore
	mu      sync.Mutex
	claimed bool
}

func (s *claimOnce) ClaimDue(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]app.Dispatch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claimed {
		return nil, nil
	}
	batch, err := s.memStore.ClaimDue(ctx, now, limit, lease)
	s.claimed = len(batch) > 0
	return batch, err
}

// failingRecords fails every Record while failing is set, counting calls.
type failingRecords struct {
	*claimOnce
	mu      sync.Mutex
	failing bool
	calls   int
}

func (s *failingRecords) Record(ctx context.Context, ds []*notification.Delivery) (int, error) {
	s.mu.Lock()
	s.calls++
	failing := s.failing
	s.mu.Unlock()
	if failing {
		return 0, errors.New("database down")
	}
	return s.claimOnce.Record(ctx, ds)
}

func (s *failingRecords) recordCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *failingRecords) setFailing(f bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = f
}

// blockingPusher blocks each push until released, counting pushes per token.
type blockingPusher struct {
	*fakePusher
	started chan string
	release chan struct{}
}

func (p *blockingPusher) Push(ctx context.Context, msg notification.Message) (string, error) {
	p.started <- msg.Token
	<-p.release
	return p.fakePusher.Push(ctx, msg)
}

func TestARetryAfterPauseHoldsEveryPushIncludingThoseQueuedAtTheRateLimiter(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	for i := range 6 {
		store.add(fmt.Sprintf("device-%02d", i), notification.PlatformAndroid, clock.Now())
	}
	first := true
	var mu sync.Mutex
	pusher := newFakePusher(func(notification.Message) error {
		mu.Lock()
		wasFirst := first
		first = false
		mu.Unlock()
		if wasFirst {
			// Answer once the others have reached the rate limiter, which
			// lets one through every 200ms.
			time.Sleep(100 * time.Millisecond)
			return sendErr(notification.ErrQuotaExceeded, "QUOTA_EXCEEDED", 30*time.Second)
		}
		return nil
	})
	cfg := senderConfig(clock)
	cfg.MaxInFlight = 6     // every push is started at once...
	cfg.RatePerMinute = 300 // ...and all but the first queue at the rate limiter
	cfg.QuotaDevices = 1    // one QUOTA_EXCEEDED pauses all sending
	cfg.Lease = 10 * time.Minute
	s := runSender(t, store, pusher, cfg)

	require.Eventually(t, func() bool { return s.Stats().QuotaPauses == 1 }, waitFor, 5*time.Millisecond)
	time.Sleep(1500 * time.Millisecond) // long enough for the rate limiter to let every queued push through
	assert.Equal(t, 1, pusher.callsTo(hasPrefix("device-")), "no push goes out during Retry-After, queued or not")

	clock.Advance(30 * time.Second)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusSent: 6}, store.statuses(hasPrefix("device-")))
	}, waitFor, 5*time.Millisecond, "when Retry-After has passed, the held pushes go out, and the throttled one is retried")
	assert.Equal(t, 7, pusher.callsTo(hasPrefix("device-")))
}

func TestAtShutdownWhatWasClaimedButNotStartedIsReleased(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	for i := range 5 {
		store.add(fmt.Sprintf("device-%02d", i), notification.PlatformAndroid, clock.Now())
	}
	pusher := &blockingPusher{fakePusher: newFakePusher(func(notification.Message) error { return nil }),
		started: make(chan string, 5), release: make(chan struct{})}
	s, err := app.NewSender(store, pusher, senderConfig(clock)) // one push at a time
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	<-pusher.started // the first push is under way; four wait in the queue
	require.Eventually(t, func() bool { return s.Stats().Claimed == 5 }, waitFor, 5*time.Millisecond)
	cancel()
	close(pusher.release)
	require.NoError(t, <-done)

	assert.Equal(t, 1, pusher.callsTo(hasPrefix("device-")), "nothing starts after shutdown")
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusSent: 1, notification.StatusPending: 4},
		store.statuses(hasPrefix("device-")), "the push in flight is recorded; the others are given back, unattempted")
	st := s.Stats()
	assert.Equal(t, int64(1), st.Sent)
	assert.Equal(t, int64(4), st.Released)
	assert.Zero(t, st.InFlight)
}

func TestADeliveryPastHalfItsLeaseIsReleasedNotPushed(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &claimOnce{memStore: newMemStore()}
	ids := make([]int64, 4)
	for i := range ids {
		ids[i] = store.add(fmt.Sprintf("device-%02d", i), notification.PlatformAndroid, clock.Now())
	}
	pusher := newFakePusher(func(msg notification.Message) error {
		if msg.Token == "device-00" {
			return sendErr(notification.ErrQuotaExceeded, "QUOTA_EXCEEDED", 45*time.Second)
		}
		return nil
	})
	cfg := senderConfig(clock) // one push at a time
	cfg.QuotaDevices = 1
	cfg.Lease = time.Minute
	s := runSender(t, store, pusher, cfg)
	require.Eventually(t, func() bool { return s.Stats().QuotaPauses == 1 }, waitFor, 5*time.Millisecond)

	clock.Advance(45 * time.Second) // the pause ends with a quarter of the lease left

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, int64(3), s.Stats().Released)
		assert.Equal(c, map[notification.DeliveryStatus]int{notification.StatusPending: 3},
			store.statuses(func(tok string) bool { return tok != "device-00" }))
	}, waitFor, 5*time.Millisecond)
	assert.Equal(t, 1, pusher.callsTo(hasPrefix("device-")), "another sender may own them by now: none is pushed")
	for _, id := range ids[1:] {
		assert.Zero(t, store.delivery(id).Attempts())
		assert.Equal(t, clock.Now(), store.delivery(id).DueAt(), "due again at once, for a fresh claim")
	}
}

func TestAnOutcomeBatchThatFailsToRecordIsRetriedUntilTheLeaseEnds(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &failingRecords{claimOnce: &claimOnce{memStore: newMemStore()}, failing: true}
	id := store.add("device-00", notification.PlatformAndroid, clock.Now())
	pusher := newFakePusher(func(notification.Message) error { return nil })
	cfg := senderConfig(clock)
	cfg.Lease = time.Minute
	runSender(t, store, pusher, cfg)

	require.Eventually(t, func() bool { return store.recordCalls() >= 3 }, waitFor, 5*time.Millisecond,
		"the batch is retried while the clock stands still")
	store.setFailing(false)
	require.Eventually(t, func() bool { return store.delivery(id).Status() == notification.StatusSent }, waitFor, 5*time.Millisecond,
		"once the database is back, the outcome is recorded")
}

func TestAnOutcomeBatchIsGivenUpOnceItsLeaseHasPassed(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &failingRecords{claimOnce: &claimOnce{memStore: newMemStore()}, failing: true}
	id := store.add("device-00", notification.PlatformAndroid, clock.Now())
	pusher := newFakePusher(func(notification.Message) error { return nil })
	logs := &logBuffer{}
	cfg := senderConfig(clock)
	cfg.Lease = time.Minute
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	runSender(t, store, pusher, cfg)
	require.Eventually(t, func() bool { return store.recordCalls() >= 2 }, waitFor, 5*time.Millisecond)
	require.Empty(t, logs.lines(t, "giving up recording outcomes"), "not before the lease has passed")

	clock.Advance(time.Minute + time.Second)

	require.Eventually(t, func() bool { return len(logs.lines(t, "giving up recording outcomes")) == 1 }, waitFor, 5*time.Millisecond)
	calls := store.recordCalls()
	store.setFailing(false)
	time.Sleep(300 * time.Millisecond) // longer than any flush interval: a retry would show
	assert.Equal(t, calls, store.recordCalls(), "the batch is not retried any more")
	assert.Equal(t, notification.StatusClaimed, store.delivery(id).Status(), "its lease will expire and it will be claimed again")
}

func TestStatsCountEachOutcome(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	answers := map[string]error{
		"sent-1":      nil,
		"sent-2":      nil,
		"gone":        sendErr(notification.ErrTokenUnregistered, "UNREGISTERED", 0),
		"bad-message": sendErr(notification.ErrMessageRejected, "INVALID_ARGUMENT", 0),
		"fcm-down":    sendErr(notification.ErrProviderUnavailable, "UNAVAILABLE", 0),
		"wrong-proj":  sendErr(notification.ErrSenderMismatch, "SENDER_ID_MISMATCH", 0),
	}
	// In this order: a push accepted first vouches for the project, so the
	// token of another project is pruned, not kept.
	for _, tok := range []string{"sent-1", "sent-2", "gone", "bad-message", "fcm-down", "wrong-proj"} {
		store.add(tok, notification.PlatformAndroid, clock.Now())
	}
	pusher := newFakePusher(func(msg notification.Message) error { return answers[msg.Token] })
	s := runSender(t, store, pusher, senderConfig(clock))

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, app.SenderStats{
			Claimed: 6, Sent: 2, TokensPruned: 2, Failed: 1, RetriesScheduled: 1, ConfigAlarms: 1,
			InFlightLimit: int64(senderConfig(clock).MaxInFlight),
		}, s.Stats())
	}, waitFor, 5*time.Millisecond)
}

// timedPusher is a fakePusher whose pushes may take up to timeout.
type timedPusher struct {
	*fakePusher
	timeout time.Duration
}

func (p timedPusher) PushTimeout() time.Duration { return p.timeout }

// A push that may run to its deadline must still end, and be recorded,
// before its lease does; otherwise another sender takes the delivery over
// while it is in flight and pushes it again. A claim that waited past that
// point is given back instead, even with more than half its lease left.
func TestAPushIsStartedOnlyWhileItsLeaseOutlastsItsDeadlineAndTheRecord(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &claimOnce{memStore: newMemStore()}
	ids := make([]int64, 4)
	for i := range ids {
		ids[i] = store.add(fmt.Sprintf("device-%02d", i), notification.PlatformAndroid, clock.Now())
	}
	pusher := timedPusher{fakePusher: newFakePusher(func(msg notification.Message) error {
		if msg.Token == "device-00" {
			return sendErr(notification.ErrQuotaExceeded, "QUOTA_EXCEEDED", 3*time.Second)
		}
		return nil
	}), timeout: 7 * time.Second}
	cfg := senderConfig(clock) // one push at a time
	cfg.QuotaDevices = 1
	cfg.Lease = 10 * time.Second
	s := runSender(t, store, pusher, cfg)
	require.Eventually(t, func() bool { return s.Stats().QuotaPauses == 1 }, waitFor, 5*time.Millisecond)

	// The pause ends with 7 s of the lease left: more than half, less than
	// the 7 s deadline plus the time to record.
	clock.Advance(3 * time.Second)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, int64(3), s.Stats().Released)
	}, waitFor, 5*time.Millisecond)
	assert.Equal(t, 1, pusher.callsTo(hasPrefix("device-")), "none of the three is pushed this late")
}

// runValueKey marks Run's context, to see that a push's context carries
// Run's values.
type runValueKey struct{}

// A push under way when Run's context ends is not cancelled: it finishes
// with a live context, carrying Run's values, and its outcome (sent) is
// recorded, not lost nor sent again later.
func TestAPushUnderWayWhenRunEndsFinishesUncancelledAndIsRecorded(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	store.add("device-00", notification.PlatformAndroid, clock.Now())
	started, release := make(chan struct{}), make(chan struct{})
	var pushErr, pushValue any
	pusher := newFakePusher(func(notification.Message) error { return nil })
	s, err := app.NewSender(store, pusherFunc(func(ctx context.Context, msg notification.Message) (string, error) {
		close(started)
		<-release
		pushErr, pushValue = ctx.Err(), ctx.Value(runValueKey{})
		if err := ctx.Err(); err != nil {
			return "", &notification.SendError{Class: notification.ErrPushCancelled, Code: "CANCELLED", Err: err}
		}
		return pusher.Push(ctx, msg)
	}), senderConfig(clock))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), runValueKey{}, "run"))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	<-started
	cancel() // synchronous: a context derived from ctx is done on return
	close(release)
	require.NoError(t, <-done)
	assert.Nil(t, pushErr, "the push's context was not cancelled with Run's")
	assert.Equal(t, "run", pushValue, "the push's context carries Run's values")
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, store.statuses(hasPrefix("device-")))
}

// pusherFunc is a Pusher from a function.
type pusherFunc func(context.Context, notification.Message) (string, error)

func (f pusherFunc) Push(ctx context.Context, msg notification.Message) (string, error) {
	return f(ctx, msg)
}
