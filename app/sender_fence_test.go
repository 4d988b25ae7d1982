package app_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// An instance whose heartbeats have not succeeded for nearly DeadAfter may
// be taken for dead at any moment, and the beat that reaps it frees its
// claims for the others. Its pushes wait (the budget is fenced), but its
// claim loop went on claiming: a claim made just before the reaping beat,
// pushed just after the instance's next heartbeat registered it again
// (within recheckAfter of the claim, so unchecked), was pushed by the
// instance that claimed it afresh too. It now claims nothing until a
// heartbeat succeeds.
func TestAnInstanceThatMayBeTakenForDeadClaimsNothing(t *testing.T) {
	ctx := context.Background()
	pool := testutil.NewPool(t)
	fleet := adapters.NewPostgresFleetRepository(pool)
	self := app.InstanceInfo{ID: uuid.New(), Host: "fenced", PID: 1, Version: "test"}
	clock := newFakeClock()
	membership, err := app.NewMembership(fleet, self, app.MembershipConfig{
		HeartbeatInterval: time.Second, DeadAfter: 3 * time.Second, Now: clock.Now})
	require.NoError(t, err)
	require.NoError(t, membership.Join(ctx))
	clock.Advance(2 * time.Second) // DeadAfter less a heartbeat since the last beat
	require.False(t, membership.Live())

	_, err = pool.Exec(ctx, `
		WITH tokens AS (
			INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
			SELECT 'fenced-' || g, 'user-' || g, 'android', now(), now() FROM generate_series(1, 20) g
			RETURNING token, user_id
		), notifications AS (
			INSERT INTO herald_notifications (id, recipient, type, title, created_at)
			SELECT gen_random_uuid(), user_id, 'test', 'hello', now() FROM tokens
			RETURNING id, recipient
		)
		INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT n.id, t.token, 'pending', now() - interval '1 second', now(), now()
		FROM notifications n JOIN tokens t ON t.user_id = n.recipient`)
	require.NoError(t, err)
	budget := app.NewFleetBudget(fleet, app.FleetBudgetConfig{Live: membership.Live})
	pusher := newFakePusher(func(notification.Message) error { return nil })
	s := runSender(t, adapters.NewPostgresDeliveryRepository(pool).ForInstance(self.ID), pusher, app.SenderConfig{
		Budget: budget, MaxInFlight: 4, PollInterval: 20 * time.Millisecond, FlushInterval: 20 * time.Millisecond,
	})

	time.Sleep(500 * time.Millisecond)
	var claimed int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE status <> 'pending'`).Scan(&claimed))
	assert.Zero(t, claimed, "nothing is claimed while the fleet may take this instance for dead")
	assert.Zero(t, pusher.callsTo(func(string) bool { return true }))

	// A heartbeat succeeds: the instance claims and pushes again.
	require.NoError(t, membership.Beat(ctx))
	require.True(t, membership.Live())
	require.Eventually(t, func() bool { return s.Stats().Sent == 20 }, waitFor, 10*time.Millisecond)
}

// fenceBudget is a LiveBudget whose liveness the test sets; while not live
// it grants nothing and asks for a short pause, as FleetBudget does.
type fenceBudget struct {
	live   atomic.Bool
	fenced atomic.Int64 // Takes refused while not live
}

func (b *fenceBudget) Take(ctx context.Context) (time.Duration, error) {
	if !b.live.Load() {
		b.fenced.Add(1)
		return 20 * time.Millisecond, ctx.Err()
	}
	return 0, ctx.Err()
}

func (b *fenceBudget) PauseAll(time.Duration) {}

func (b *fenceBudget) Live() bool { return b.live.Load() }

// A push checked against the store while its instance was fenced (no
// heartbeat for nearly DeadAfter) may find its claim freed by the beat that
// reaps the instance and taken by another before the fence lifts: however
// soon the instance's next heartbeat lifts it, the claim is checked again
// before the push.
func TestAPushThatWaitedOutAFenceChecksItsClaimAgain(t *testing.T) {
	store := newMemStore()
	past := time.Now().Add(-time.Minute)
	first := store.add("fence-first", notification.PlatformAndroid, past)
	second := store.add("fence-second", notification.PlatformAndroid, past.Add(time.Second))
	budget := &fenceBudget{}
	budget.live.Store(true)
	inFirst, release := make(chan struct{}), make(chan struct{})
	pusher := newFakePusher(func(msg notification.Message) error {
		if msg.Token == "fence-first" {
			close(inFirst)
			<-release
		}
		return nil
	})
	runSender(t, store, pusher, app.SenderConfig{Budget: budget, MaxInFlight: 1,
		PollInterval: 5 * time.Millisecond, FlushInterval: 5 * time.Millisecond})
	<-inFirst // both are claimed; the second waits for the only worker

	budget.live.Store(false) // the heartbeats stop succeeding
	close(release)
	require.Eventually(t, func() bool { return budget.fenced.Load() > 0 }, waitFor, time.Millisecond,
		"the second push waits out the fence")
	// The fleet reaps the instance, frees its claim, and another claims it.
	store.mu.Lock()
	d := store.rows[second-1].d
	store.rows[second-1].d = notification.DeliveryFromDatabase(d.ID(), d.NotificationID(), d.Token(),
		notification.StatusClaimed, d.Attempts(), time.Now().Add(time.Minute), uuid.New(), "", "", "", time.Now())
	store.mu.Unlock()
	budget.live.Store(true) // a heartbeat succeeds at once

	require.Eventually(t, func() bool { return store.delivery(first).Status() == notification.StatusSent },
		waitFor, time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	assert.Zero(t, pusher.callsTo(hasPrefix("fence-second")), "the claim taken over is not pushed by this instance")
}
