package app_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// dbClockStore is a memStore whose leases run on the database's clock (real
// time from dbStart), as the Postgres store's do, while the deliveries it
// returns express their lease ends in the caller's clock (now+lease), as
// the Postgres store's do: a sender whose clock steps back sees its leases
// longer than the database holds them.
type dbClockStore struct {
	*memStore
	dbStart time.Time // the database's clock reads dbStart when real time reads start
	start   time.Time

	mu      sync.Mutex
	leaseOf map[int64]time.Time // a claimed delivery's lease end, on the database's clock
}

func newDBClockStore(dbStart time.Time) *dbClockStore {
	return &dbClockStore{memStore: newMemStore(), dbStart: dbStart, start: time.Now(), leaseOf: map[int64]time.Time{}}
}

func (s *dbClockStore) dbNow() time.Time { return s.dbStart.Add(time.Since(s.start)) }

func (s *dbClockStore) ClaimDue(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]app.Dispatch, error) {
	db := s.dbNow()
	batch, err := s.memStore.ClaimDue(ctx, db, limit, lease)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, d := range batch {
		dl := d.Delivery
		s.leaseOf[dl.ID()] = db.Add(lease)
		batch[i].Delivery = notification.DeliveryFromDatabase(dl.ID(), dl.NotificationID(), dl.Token(), dl.Status(),
			dl.Attempts(), now.Add(lease), dl.ClaimID(), dl.LastError(), dl.ErrorCode(), "", now)
	}
	return batch, err
}

func (s *dbClockStore) StillClaimed(ctx context.Context, d *notification.Delivery) (bool, error) {
	s.mu.Lock()
	end := s.leaseOf[d.ID()]
	s.mu.Unlock()
	if !end.After(s.dbNow()) {
		return false, nil // the lease ended: it may be taken over
	}
	return s.memStore.StillClaimed(ctx, d)
}

// A sender whose clock steps back while a claimed delivery waits (here
// behind a pause all sending takes) must not take the lease for longer
// than the database does: the database frees the claim when the lease
// ends, another instance claims and pushes the delivery, and this one
// pushes it too.
func TestAClockSteppingBackNeverLetsAPushOutlastItsLease(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newDBClockStore(clock.Now())
	store.add("throttled", notification.PlatformAndroid, clock.Now())
	store.add("waiting", notification.PlatformAndroid, clock.Now())
	pusher := newFakePusher(func(msg notification.Message) error {
		if msg.Token == "throttled" {
			// Project-wide (QuotaDevices 1): all sending pauses 10 s.
			return sendErr(notification.ErrQuotaExceeded, "QUOTA_EXCEEDED", 10*time.Second)
		}
		return nil
	})
	cfg := senderConfig(clock)
	cfg.Lease = time.Second
	cfg.QuotaDevices = 1
	s := runSender(t, store, pusher, cfg)

	require.Eventually(t, func() bool { return s.Stats().QuotaPauses == 1 }, waitFor, time.Millisecond)
	require.EqualValues(t, 2, s.Stats().Claimed, "the other delivery waits behind the pause, claimed")
	// In real time its lease ends, and another instance claims it (and
	// pushes it).
	time.Sleep(1500 * time.Millisecond)
	other, err := store.ClaimDue(context.Background(), clock.Now(), 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, other, 1)
	require.Equal(t, "waiting", other[0].Message.Token)
	// Meanwhile this server's clock was stepped back an hour; then the
	// pause runs out on it.
	waited := func() bool {
		st := s.Stats()
		return st.Released > 0 || st.ClosedBeforePush > 0 || pusher.callsTo(func(tok string) bool { return tok == "waiting" }) > 0
	}
	stepBackThenRunUntil(t, clock, waited, "the waiting delivery is pushed, given back or found taken over")
	assert.Zero(t, pusher.callsTo(func(tok string) bool { return tok == "waiting" }),
		"the other instance pushes it: pushed here too, it would reach the device twice")
}

// A claim that waited longer than the recheck interval is checked in the
// store before its push, however the sender's clock moved meanwhile: a
// clock stepped back must not skip the check and push to a token that
// changed owner while the delivery waited.
func TestAClockSteppingBackNeverSkipsTheCheckOfAClaimThatWaited(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	store.add("throttled", notification.PlatformAndroid, clock.Now())
	moved := store.add("sold-phone", notification.PlatformAndroid, clock.Now())
	pusher := newFakePusher(func(msg notification.Message) error {
		if msg.Token == "throttled" {
			// Project-wide (QuotaDevices 1): all sending pauses 10 s.
			return sendErr(notification.ErrQuotaExceeded, "QUOTA_EXCEEDED", 10*time.Second)
		}
		return nil
	})
	cfg := senderConfig(clock)
	cfg.QuotaDevices = 1
	s := runSender(t, store, pusher, cfg)

	require.Eventually(t, func() bool { return s.Stats().QuotaPauses == 1 }, waitFor, time.Millisecond)
	require.EqualValues(t, 2, s.Stats().Claimed, "the other delivery waits behind the pause, claimed")
	// While it waits, its phone changes owner: registering the token to
	// another user closes the delivery.
	store.mu.Lock()
	d := store.rows[moved-1].d
	store.rows[moved-1].d = notification.DeliveryFromDatabase(d.ID(), d.NotificationID(), d.Token(),
		notification.StatusTokenMoved, d.Attempts(), clock.Now(), d.ClaimID(), "token moved", "TOKEN_MOVED", "", clock.Now())
	store.mu.Unlock()
	time.Sleep(300 * time.Millisecond) // longer than a claim may wait unchecked
	// Meanwhile the server's clock was stepped back an hour; then the
	// pause runs out on it.
	waited := func() bool {
		return s.Stats().ClosedBeforePush > 0 || pusher.callsTo(func(tok string) bool { return tok == "sold-phone" }) > 0
	}
	stepBackThenRunUntil(t, clock, waited, "the moved delivery is pushed or found closed")
	assert.Zero(t, pusher.callsTo(func(tok string) bool { return tok == "sold-phone" }),
		"the phone belongs to someone else now: the previous owner's push must not reach it")
}

// stepBackThenRunUntil steps the sender's clock back an hour, then runs it
// on, half a second per look, until done: the paused sender notices the
// step at its next look at the clock (every 100 ms at most), and its pause
// then ends at most the pause's length later on the clock. A single jump
// forward taken before that look (it came 50 ms after the step) left the
// pause waiting for a clock that never moved again.
func stepBackThenRunUntil(t *testing.T, clock *fakeClock, done func() bool, msg string) {
	t.Helper()
	clock.Advance(-time.Hour)
	require.Eventually(t, func() bool {
		clock.Advance(500 * time.Millisecond)
		return done()
	}, waitFor, 5*time.Millisecond, msg)
}
