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
)

// TestAScheduledPushIsNeverEarlyWhenRaisedOnAServerWhoseClockRunsAhead: a
// replica whose clock runs two hours ahead raises a notification scheduled
// an hour from now. Before, its clock said the send time had passed, the
// send time was dropped, and the push went out an hour early.
func TestAScheduledPushIsNeverEarlyWhenRaisedOnAServerWhoseClockRunsAhead(t *testing.T) {
	t.Parallel()
	var ahead atomic.Int64
	ahead.Store(int64(2 * time.Hour))
	cfg := fastConfig()
	cfg.Now = clockAt(&ahead)
	h := newDraftHarness(t, cfg)
	h.register("u", "tok", notification.PlatformAndroid)
	h.run()
	d := draft("u", "your trial ends in an hour")
	d.SendAt = time.Now().Add(time.Hour)
	n := h.notify(d)
	h.notify(draft("u", "now"))

	assert.Eventually(t, func() bool { return len(h.fake.AcceptedFor("tok")) == 1 }, 5*time.Second, 20*time.Millisecond,
		"the unscheduled one goes at once")
	time.Sleep(500 * time.Millisecond) // more polls
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusPending: 1}, h.statuses(n), "expanded, held")
	assert.Len(t, h.fake.AcceptedFor("tok"), 1, "nothing early")
	assert.Equal(t, 1, h.countRows(`SELECT count(*) FROM herald_deliveries
		WHERE notification_id = $1 AND due_at > now() + interval '59 minutes'`, n.ID()), "due at its send time")
	assert.Equal(t, []string{"now"}, h.inboxTitles("u"), "not in the inbox before its time")
}

// replica is another Herald on h's database, raising the Notify rule, whose
// Config.Now is off by skew: a second server of the host's fleet. It runs
// nothing unless the test runs it.
func (h *harness) replica(cfg herald.Config, skew time.Duration) *harness {
	h.t.Helper()
	var offset atomic.Int64
	offset.Store(int64(skew))
	cfg.Now = clockAt(&offset)
	client, err := herald.NewFCM(context.Background(), h.fake.ProjectID(), h.fake.ClientOptions()...)
	require.NoError(h.t, err)
	rules := notification.NewRules()
	require.NoError(h.t, notification.On(rules, func(e Notify) ([]notification.Draft, error) {
		return []notification.Draft{e.Draft}, nil
	}))
	other, err := herald.New(h.pool, client, rules, cfg)
	require.NoError(h.t, err)
	return &harness{t: h.t, pool: h.pool, fake: h.fake, herald: other}
}

// forEachSkew runs test in a parallel subtest for a replica whose clock
// runs 10 minutes ahead, and in another for one 10 minutes behind: h is a
// Herald with the right clock, "tok" registered to "u", and skewed a
// replica on its database. configure, if not nil, changes the config both
// are made with. Neither runs until the test runs h.
func forEachSkew(t *testing.T, configure func(*herald.Config), test func(t *testing.T, h, skewed *harness, skew time.Duration)) {
	t.Helper()
	for _, skew := range []time.Duration{10 * time.Minute, -10 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			t.Parallel()
			cfg := fastConfig()
			if configure != nil {
				configure(&cfg)
			}
			h := newDraftHarness(t, cfg)
			skewed := h.replica(cfg, skew)
			h.register("u", "tok", notification.PlatformAndroid)
			test(t, h, skewed, skew)
		})
	}
}

// TestAnIdempotencyKeyHoldsOnEveryReplicaWhateverItsClock: a key's window
// is the database's time. Before, each raise judged the window by its own
// server's clock: a replica 10 minutes ahead found a 5-minute key raised a
// moment ago by another replica already expired (and one 10 minutes behind
// stored a key already expired for everyone else), freed it, and the user
// got the push twice.
func TestAnIdempotencyKeyHoldsOnEveryReplicaWhateverItsClock(t *testing.T) {
	t.Parallel()
	fiveMinutes := func(cfg *herald.Config) { cfg.Raise.IdempotencyWindow = 5 * time.Minute }
	forEachSkew(t, fiveMinutes, func(t *testing.T, h, skewed *harness, _ time.Duration) {
		h.run()

		// Each way round: the right clock first, then the skewed one,
		// and the skewed first, then the right one.
		first := h.notify(keyed("u", "your code is 1234", "otp-1"))
		assert.Equal(t, first.ID(), skewed.notify(keyed("u", "your code is 1234", "otp-1")).ID(),
			"raised again on the skewed replica")
		first = skewed.notify(keyed("u", "your code is 5678", "otp-2"))
		assert.Equal(t, first.ID(), h.notify(keyed("u", "your code is 5678", "otp-2")).ID(),
			"raised again on the right one")

		assert.Equal(t, 2, h.countRows(`SELECT count(*) FROM herald_notifications`))
		assert.Equal(t, 2, h.countRows(`SELECT count(*) FROM herald_notifications
			WHERE idempotent_until - created_at = interval '5 minutes'
				AND created_at BETWEEN now() - interval '1 minute' AND now()`),
			"each key holds 5 minutes from its creation by the database's clock")
		h.waitIdle(10 * time.Second)
		assert.Len(t, h.fake.AcceptedFor("tok"), 2, "one push per key")
	})
}

// TestTheNewestNotificationWinsWhateverTheClockOfTheReplicaThatRaisedIt:
// "newer" is what was raised later, by the database's clock. Before, the
// creation time was the raising server's: a notification raised on a
// replica 10 minutes ahead stayed newer than everything the right clocks
// raised for 10 minutes after, so it was pushed and the later one with its
// collapse key superseded, and the inbox listed it above them.
func TestTheNewestNotificationWinsWhateverTheClockOfTheReplicaThatRaisedIt(t *testing.T) {
	t.Parallel()
	forEachSkew(t, nil, func(t *testing.T, h, skewed *harness, skew time.Duration) {
		// The replica whose clock is ahead raises first.
		first, then := skewed, h
		if skew < 0 {
			first, then = h, skewed
		}
		first.notify(draft("u", "first"))
		then.notify(draft("u", "second"))
		old := first.notify(collapsing("u", "3 new comments", "comments"))
		newer := then.notify(collapsing("u", "4 new comments", "comments"))
		h.run()

		h.waitStatuses(newer, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
		h.waitStatuses(old, map[notification.DeliveryStatus]int{notification.StatusSuperseded: 1}, 10*time.Second)
		assert.Equal(t, []string{"4 new comments", "second", "first"}, h.inboxTitles("u"), "newest first")
		assert.True(t, old.CreatedAt().Before(newer.CreatedAt()),
			"Raise returns the creation time as stored: %s, %s", old.CreatedAt(), newer.CreatedAt())
	})
}

// TestAnExpiryStillToComeIsAcceptedWhateverTheRaisingReplicasClock: whether
// ExpiresAt has passed is the database's call, as for SendAt. Before, a
// replica 10 minutes ahead refused an expiry 3 minutes from now as already
// passed, and one 10 minutes behind accepted one 3 minutes past (its push
// then ended expired, never sent, while Raise said all was well).
func TestAnExpiryStillToComeIsAcceptedWhateverTheRaisingReplicasClock(t *testing.T) {
	t.Parallel()
	forEachSkew(t, nil, func(t *testing.T, h, skewed *harness, _ time.Duration) {
		h.run()

		d := draft("u", "your ride is here")
		d.ExpiresAt = time.Now().Add(3 * time.Minute)
		n := skewed.notify(d)
		h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)

		ctx := context.Background()
		tx, err := h.pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck // test
		past := draft("u", "your ride was here")
		past.ExpiresAt = time.Now().Add(-3 * time.Minute)
		_, err = skewed.herald.Raise(ctx, tx, Notify{Draft: past})
		require.ErrorIs(t, err, notification.ErrExpiresTooEarly, "already passed by the database's clock")
		assert.ErrorContains(t, err, "event 0 (notify), notification 0")
		_, err = tx.Exec(ctx, `SELECT 1`)
		assert.NoError(t, err, "the transaction stays usable")
	})
}
