package app_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// memBudget is an app.BudgetStore in memory: a bucket that holds what the
// test puts in it, and a pause.
type memBudget struct {
	mu     sync.Mutex
	tokens int
	pause  time.Duration
	grants []int // what each grant asked for
	fail   error
}

func (m *memBudget) Grant(_ context.Context, want int, _, _ float64) (int, time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return 0, 0, m.fail
	}
	m.grants = append(m.grants, want)
	got := min(want, m.tokens)
	m.tokens -= got
	return got, m.pause, nil
}

func (m *memBudget) PauseAll(_ context.Context, d time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pause = max(m.pause, d)
	return nil
}

func (m *memBudget) asked() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int(nil), m.grants...)
}

func TestAnInstanceHoldsAtMostOneGrantOfTheSharedBudget(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &memBudget{tokens: 100}
	// 120,000 a minute is 2,000 a second: a grant (4 ms) is 8.
	b := app.NewFleetBudget(store, app.FleetBudgetConfig{RatePerMinute: 120_000, Now: clock.Now})
	require.Equal(t, 8, b.GrantSize())

	for range 25 {
		pause, err := b.Take(context.Background())
		require.NoError(t, err)
		require.Zero(t, pause)
	}
	time.Sleep(50 * time.Millisecond) // a grant asked in the background lands
	asked := store.asked()
	granted := 100 - store.tokens
	assert.LessOrEqual(t, granted-25, 8, "besides what it spent, it holds at most one grant")
	assert.LessOrEqual(t, len(asked), 7, "about one round trip per half grant, not per push: %v", asked)
	for _, want := range asked {
		assert.LessOrEqual(t, want, 8, "no grant asks for more than one grant's worth")
	}
}

func TestAPauseSetByAnotherInstanceStopsThisOneAtItsNextGrant(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &memBudget{tokens: 100}
	b := app.NewFleetBudget(store, app.FleetBudgetConfig{RatePerMinute: 60_000, Now: clock.Now})
	pause, err := b.Take(context.Background())
	require.NoError(t, err)
	require.Zero(t, pause)

	store.pause = 3 * time.Second // another instance saw a project-wide 429
	clock.Advance(150 * time.Millisecond)

	pause, err = b.Take(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, pause, "tokens held longer than 100ms are not spent before the pause is read again")
	clock.Advance(time.Second)
	pause, err = b.Take(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, pause, "the pause is kept locally without asking again")
	assert.Len(t, store.asked(), 2)
}

func TestAProjectWidePauseStopsThisInstanceAtOnceAndTellsTheFleet(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &memBudget{tokens: 100}
	b := app.NewFleetBudget(store, app.FleetBudgetConfig{RatePerMinute: 60_000, Now: clock.Now})
	_, err := b.Take(context.Background())
	require.NoError(t, err)

	b.PauseAll(3 * time.Second)

	assert.Equal(t, 3*time.Second, store.pause, "written for the other instances")
	pause, err := b.Take(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, pause, "this instance's fresh tokens wait too")
}

func TestAnInstanceThatMayBeTakenForDeadStartsNoPush(t *testing.T) {
	t.Parallel()
	store := &memBudget{tokens: 100}
	b := app.NewFleetBudget(store, app.FleetBudgetConfig{Live: func() bool { return false }})
	pause, err := b.Take(context.Background())
	require.NoError(t, err)
	assert.Positive(t, pause)
	assert.Empty(t, store.asked())
}

func TestAnUnreachableBudgetHoldsPushesUntilTheContextEnds(t *testing.T) {
	t.Parallel()
	store := &memBudget{fail: errors.New("database down")}
	b := app.NewFleetBudget(store, app.FleetBudgetConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := b.Take(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// memInstances is an app.InstanceStore in memory for one instance.
type memInstances struct {
	mu     sync.Mutex
	leader bool
	dead   []uuid.UUID
	freed  [][]uuid.UUID
	fail   error
	left   bool
}

func (m *memInstances) Beat(context.Context, app.InstanceInfo, time.Duration, time.Duration) (app.BeatResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return app.BeatResult{}, m.fail
	}
	return app.BeatResult{Leader: m.leader, Dead: m.dead}, nil
}

func (m *memInstances) FreeClaimsOf(_ context.Context, dead []uuid.UUID) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.freed = append(m.freed, dead)
	return len(dead), nil
}

func (m *memInstances) Leave(context.Context, uuid.UUID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.left = true
	return nil
}

func TestLeadershipAndLivenessFollowTheLastSuccessfulHeartbeat(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &memInstances{leader: true, dead: []uuid.UUID{uuid.New()}}
	m, err := app.NewMembership(store, app.InstanceInfo{ID: uuid.New()},
		app.MembershipConfig{HeartbeatInterval: time.Second, DeadAfter: 5 * time.Second, Now: clock.Now})
	require.NoError(t, err)
	assert.False(t, m.Live(), "not live before joining")

	require.NoError(t, m.Join(context.Background()))
	assert.True(t, m.Leader())
	assert.True(t, m.Live())
	assert.Len(t, store.freed, 1, "the leader frees the dead instances' claims")

	store.fail = errors.New("database down")
	clock.Advance(3500 * time.Millisecond)
	assert.Error(t, m.Beat(context.Background()))
	assert.True(t, m.Live(), "a failed beat changes nothing yet")
	clock.Advance(time.Second)
	assert.False(t, m.Live(), "one heartbeat before the others may take it for dead, it stops pushing")
	clock.Advance(time.Second)
	assert.False(t, m.Leader(), "its lease has run out on its own clock too")

	store.fail = nil
	store.leader = false
	require.NoError(t, m.Beat(context.Background()))
	assert.True(t, m.Live())
	assert.False(t, m.Leader())
	m.Leave(context.Background())
	assert.True(t, store.left)
	assert.False(t, m.Live())
}

func TestDeadAfterMustCoverThreeHeartbeats(t *testing.T) {
	t.Parallel()
	err := app.MembershipConfig{HeartbeatInterval: 2 * time.Second, DeadAfter: 5 * time.Second}.Validate()
	require.EqualError(t, err, "DeadAfter (5s) must be at least three times HeartbeatInterval (2s)")
}

// fleetGate is an app.SendBudget that grants everything unless the fleet
// is paused, and records the pauses this instance asks of the fleet.
type fleetGate struct {
	mu       sync.Mutex
	pause    time.Duration // the fleet's pause, as another instance set it
	pausedBy []time.Duration
	taken    int
}

func (g *fleetGate) Take(context.Context) (time.Duration, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pause > 0 {
		return g.pause, nil
	}
	g.taken++
	return 0, nil
}

func (g *fleetGate) PauseAll(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pausedBy = append(g.pausedBy, d)
}

func (g *fleetGate) set(pause time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pause = pause
}

func (g *fleetGate) asked() []time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.pausedBy)
}

func TestAProjectWideQuotaSeenHerePausesTheWholeFleet(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	for i := range 5 {
		store.add(fmt.Sprintf("device-%02d", i), notification.PlatformAndroid, clock.Now())
	}
	pusher := newFakePusher(func(notification.Message) error {
		return sendErr(notification.ErrQuotaExceeded, "QUOTA_EXCEEDED", 3*time.Second)
	})
	gate := &fleetGate{}
	cfg := senderConfig(clock)
	cfg.QuotaDevices = 1
	cfg.Budget = gate
	s := runSender(t, store, pusher, cfg)

	require.Eventually(t, func() bool { return len(gate.asked()) > 0 }, waitFor, 5*time.Millisecond)
	assert.Equal(t, 3*time.Second, gate.asked()[0], "the fleet pauses for Retry-After")
	assert.Equal(t, int64(1), s.Stats().QuotaPauses)
}

func TestAPauseTheFleetSetHoldsThisInstancesPushes(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := newMemStore()
	store.add("device-00", notification.PlatformAndroid, clock.Now())
	pusher := newFakePusher(func(notification.Message) error { return nil })
	gate := &fleetGate{pause: 2 * time.Second} // another instance saw the 429
	cfg := senderConfig(clock)
	cfg.Budget = gate
	runSender(t, store, pusher, cfg)

	time.Sleep(200 * time.Millisecond) // the clock stands still: the pause must hold
	assert.Zero(t, pusher.callsTo(hasPrefix("device-")), "no push while the fleet is paused")
	gate.set(0)
	clock.Advance(2 * time.Second)
	require.Eventually(t, func() bool { return pusher.callsTo(hasPrefix("device-")) == 1 }, waitFor, 5*time.Millisecond)
}
