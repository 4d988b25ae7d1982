package herald_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// anotherInstance runs a second Herald with cfg on h's database and fake
// FCM, as another application server would, until the test ends.
func (h *harness) anotherInstance(cfg herald.Config) *harness {
	h.t.Helper()
	client, err := herald.NewFCM(context.Background(), h.fake.ProjectID(), h.fake.ClientOptions()...)
	require.NoError(h.t, err)
	rules := notification.NewRules()
	require.NoError(h.t, notification.On(rules, notification.NotifyCourseAuthor))
	other, err := herald.New(h.pool, client, rules, cfg)
	require.NoError(h.t, err)
	o := &harness{t: h.t, pool: h.pool, fake: h.fake, herald: other}
	o.run()
	return o
}

// clockAt returns a clock offset from the real one by *offset, which the
// test may change while the clock is in use.
func clockAt(offset *atomic.Int64) func() time.Time {
	return func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
}

func TestTwoServersWhoseClocksDiffer30sNeverPushADeliveryTwice(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.Lease = 20 * time.Second
	cfg.Sender.MaxInFlight = 2
	h := newHarness(t, cfg)
	tokens := h.registerTokens("author", 20)
	// Slow pushes keep the first server's leases live for seconds: 20
	// pushes two at a time, half a second each.
	h.fake.SetLatency(500 * time.Millisecond)
	h.run()
	n := h.raise(true, comment("m1", "ann", "author"))[0]
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		s := h.statuses(n)
		assert.Equal(c, 20, s[notification.StatusClaimed]+s[notification.StatusSent])
		assert.GreaterOrEqual(c, s[notification.StatusClaimed], 10)
	}, 10*time.Second, 5*time.Millisecond, "the first server holds live leases on the backlog")

	// A second server whose clock is 30 s ahead: by its clock, every lease
	// of the first one ended 10 s ago.
	var ahead atomic.Int64
	ahead.Store(int64(30 * time.Second))
	skewed := cfg
	skewed.Now = clockAt(&ahead)
	h.anotherInstance(skewed)

	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 20}, 30*time.Second)
	testutil.WaitIdle(t, h.pool, 10*time.Second)
	for _, tok := range tokens {
		assert.Len(t, h.fake.AcceptedFor(tok), 1, tok)
	}
	assert.Equal(t, int64(20), h.fake.AcceptedCount(), "no push twice")
}

func TestASendersClockJumpNeitherBringsRetriesForwardNorStallsSending(t *testing.T) {
	t.Parallel()
	t.Run("a jump forward does not make a scheduled retry due", func(t *testing.T) {
		t.Parallel()
		var offset atomic.Int64
		cfg := fastConfig()
		cfg.Now = clockAt(&offset)
		cfg.Sender.Retry = notification.RetryPolicy{MaxAttempts: 4, BaseDelay: time.Minute, MaxDelay: time.Minute}
		h := newHarness(t, cfg)
		h.registerTokens("author", 1)
		h.registerTokens("other", 1)
		h.fake.FailToken("author-device-0000", testutil.Fault{Code: testutil.FaultInternal, Times: 1})
		h.run()
		first := h.raise(true, comment("m1", "ann", "author"))[0]
		h.waitStatuses(first, map[notification.DeliveryStatus]int{notification.StatusRetryScheduled: 1}, 10*time.Second)

		// The server's clock jumps two minutes ahead; the retry is due in
		// one minute by the database's clock.
		offset.Store(int64(2 * time.Minute))
		// A later notification is delivered: the sender claimed after the jump.
		later := h.raise(true, comment("m2", "ann", "other"))[0]
		testutil.WaitDelivered(t, h.pool, later.ID(), 10*time.Second)
		time.Sleep(500 * time.Millisecond) // ten more polls
		assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusRetryScheduled: 1}, h.statuses(first))
		assert.Empty(t, h.fake.AcceptedFor("author-device-0000"))
	})
	t.Run("a server an hour behind still sends", func(t *testing.T) {
		t.Parallel()
		var offset atomic.Int64
		offset.Store(int64(-time.Hour))
		cfg := fastConfig()
		cfg.Now = clockAt(&offset)
		h := newHarness(t, cfg)
		tokens := h.registerTokens("author", 3)
		h.run()
		n := h.raise(true, comment("m1", "ann", "author"))[0]
		testutil.WaitDelivered(t, h.pool, n.ID(), 10*time.Second)
		for _, tok := range tokens {
			assert.Len(t, h.fake.AcceptedFor(tok), 1, tok)
		}
	})
}
