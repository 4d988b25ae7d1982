package app_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/app"
)

// memHousekeeping is an app.HousekeepingStore in memory: each table holds a
// number of rows past their retention, and each delete takes at most limit
// of them.
type memHousekeeping struct {
	mu     sync.Mutex
	rows   map[string]int
	calls  map[string][]time.Duration // the retention each call was given
	limits []int
	fail   map[string]error
}

func newMemHousekeeping(rows map[string]int) *memHousekeeping {
	return &memHousekeeping{rows: rows, calls: map[string][]time.Duration{}, fail: map[string]error{}}
}

func (s *memHousekeeping) sweeps() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls["outbox"])
}

func (s *memHousekeeping) del(table string, olderThan time.Duration, limit int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[table] = append(s.calls[table], olderThan)
	s.limits = append(s.limits, limit)
	if err := s.fail[table]; err != nil {
		return 0, err
	}
	n := min(limit, s.rows[table])
	s.rows[table] -= n
	return n, nil
}

func (s *memHousekeeping) DeleteConsumedOutbox(_ context.Context, olderThan time.Duration, limit int) (int, error) {
	return s.del("outbox", olderThan, limit)
}

func (s *memHousekeeping) DeleteFinishedDeliveries(_ context.Context, olderThan, _ time.Duration, limit int) (int, error) {
	return s.del("deliveries", olderThan, limit)
}

func (s *memHousekeeping) DeleteFinishedBroadcasts(_ context.Context, olderThan time.Duration, limit int) (int, error) {
	return s.del("broadcasts", olderThan, limit)
}

func (s *memHousekeeping) DeleteReplayedDeadLetters(_ context.Context, olderThan time.Duration, limit int) (int, error) {
	return s.del("dead_letters", olderThan, limit)
}

func (s *memHousekeeping) DeleteTokensUnseenFor(_ context.Context, olderThan time.Duration, limit int) (int, error) {
	return s.del("tokens", olderThan, limit)
}

func (s *memHousekeeping) DeleteIdleDeviceRates(_ context.Context, limit int) (int, error) {
	return s.del("device_rates", 0, limit)
}

func (s *memHousekeeping) DeleteOldNotifications(_ context.Context, readOlderThan, _ time.Duration, limit int) (int, error) {
	return s.del("notifications", readOlderThan, limit)
}

func newHousekeeper(t *testing.T, store app.HousekeepingStore, cfg app.HousekeepingConfig) *app.Housekeeper {
	t.Helper()
	h, err := app.NewHousekeeper(store, cfg)
	require.NoError(t, err)
	return h
}

func TestEachSweepDeletesInBoundedBatchesUntilAShortBatch(t *testing.T) {
	t.Parallel()
	store := newMemHousekeeping(map[string]int{
		"outbox": 25, "deliveries": 20, "broadcasts": 0, "dead_letters": 3, "tokens": 10,
	})
	h := newHousekeeper(t, store, app.HousekeepingConfig{BatchSize: 10})

	report, err := h.Sweep(context.Background())

	require.NoError(t, err)
	assert.Equal(t, app.HousekeepingReport{OutboxRows: 25, Deliveries: 20, DeadLetters: 3, Tokens: 10}, report)
	calls := func(table string) int { return len(store.calls[table]) }
	assert.Equal(t, 3, calls("outbox"), "10, 10, then a short batch of 5")
	assert.Equal(t, 3, calls("deliveries"), "10, 10, then an empty batch")
	assert.Equal(t, 1, calls("broadcasts"))
	assert.Equal(t, 1, calls("dead_letters"))
	assert.Equal(t, 2, calls("tokens"))
	for _, limit := range store.limits {
		assert.Equal(t, 10, limit, "no statement deletes more than BatchSize")
	}
}

func TestOnlyTheFleetsLeaderSweeps(t *testing.T) {
	t.Parallel()
	var leader atomic.Bool
	store := newMemHousekeeping(map[string]int{"outbox": 5})
	h := newHousekeeper(t, store, app.HousekeepingConfig{Interval: 5 * time.Millisecond, Leader: leader.Load})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()

	time.Sleep(50 * time.Millisecond)
	assert.Zero(t, store.sweeps(), "an instance that does not lead never sweeps")
	leader.Store(true)
	assert.Eventually(t, func() bool { return store.sweeps() > 0 }, 5*time.Second, 5*time.Millisecond,
		"once it leads, it sweeps")
	cancel()
	require.NoError(t, <-done)
}

func TestANegativeRetentionTurnsThatSweepOff(t *testing.T) {
	t.Parallel()
	store := newMemHousekeeping(map[string]int{"outbox": 5, "dead_letters": 5, "tokens": 5})
	h := newHousekeeper(t, store, app.HousekeepingConfig{OutboxRetention: -1, TokenMaxAge: -1, FailedRetention: 48 * time.Hour})

	report, err := h.Sweep(context.Background())

	require.NoError(t, err)
	assert.NotContains(t, store.calls, "outbox")
	assert.NotContains(t, store.calls, "tokens")
	assert.Equal(t, []time.Duration{48 * time.Hour}, store.calls["dead_letters"], "the others run with their retention")
	assert.Equal(t, 5, report.DeadLetters)
	assert.Equal(t, []time.Duration{7 * 24 * time.Hour}, store.calls["deliveries"], "a zero retention means the default")
}

// One table's sweep may fail at every run (a host's foreign key holds on
// to one of its rows): the others are swept all the same, or one row would
// make every table grow without bound.
func TestASweepThatFailsOnOneTableStillSweepsTheOthers(t *testing.T) {
	t.Parallel()
	store := newMemHousekeeping(map[string]int{"outbox": 5, "tokens": 5})
	store.fail["deliveries"] = errors.New("database down")
	h := newHousekeeper(t, store, app.HousekeepingConfig{})

	report, err := h.Sweep(context.Background())

	require.ErrorContains(t, err, "database down")
	assert.Equal(t, 5, report.OutboxRows, "what was deleted before the error is reported")
	assert.Equal(t, 5, report.Tokens, "and what was deleted after it")
}
