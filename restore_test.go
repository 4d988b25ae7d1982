package herald_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// lastOutboxRow returns the offset of the newest outbox row.
func (h *harness) lastOutboxRow() int64 {
	h.t.Helper()
	var offset int64
	require.NoError(h.t, h.pool.QueryRow(context.Background(),
		`SELECT max("offset") FROM watermill_herald_outbox`).Scan(&offset))
	return offset
}

// simulateLogicalRestore makes the database look like a logical restore
// of a cluster whose transaction ids were far ahead of this one's: the
// stored position and the outbox rows at the given offsets get ids a
// million past this cluster's next one. consumed rows sit at or before the
// stored position, unconsumed ones after it.
// Events given are raised in the same transaction, as unconsumed restored
// rows, so that a running relay never sees them before.
func (h *harness) simulateLogicalRestore(consumed, unconsumed []int64, events ...notification.Event) []*notification.Notification {
	h.t.Helper()
	ctx := context.Background()
	var future uint64
	require.NoError(h.t, h.pool.QueryRow(ctx,
		`SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000`).Scan(&future))
	tx, err := h.pool.Begin(ctx)
	require.NoError(h.t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	var raised []*notification.Notification
	if len(events) > 0 {
		raised, err = h.herald.Raise(ctx, tx, events...)
		require.NoError(h.t, err)
		var offset int64
		require.NoError(h.t, tx.QueryRow(ctx, `SELECT max("offset") FROM watermill_herald_outbox`).Scan(&offset))
		unconsumed = append(unconsumed, offset)
	}
	position := int64(0)
	for _, off := range consumed {
		_, err := tx.Exec(ctx, `UPDATE watermill_herald_outbox SET transaction_id = ($1::bigint - 10)::text::xid8
			WHERE "offset" = $2`, future, off)
		require.NoError(h.t, err)
		position = max(position, off)
	}
	for _, off := range unconsumed {
		_, err := tx.Exec(ctx, `UPDATE watermill_herald_outbox SET transaction_id = ($1::bigint + 10)::text::xid8
			WHERE "offset" = $2`, future, off)
		require.NoError(h.t, err)
	}
	tag, err := tx.Exec(ctx, `UPDATE watermill_offsets_herald_outbox
		SET last_processed_transaction_id = $1::bigint::text::xid8, offset_acked = $2
		WHERE consumer_group = 'herald_relay'`, future, position)
	require.NoError(h.t, err)
	require.Equal(h.t, int64(1), tag.RowsAffected())
	require.NoError(h.t, tx.Commit(ctx))
	return raised
}

func TestEventsRaisedAfterALogicalRestoreAreDelivered(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	cfg := fastConfig()
	cfg.Logger = slog.New(logs)
	cfg.Relay.RestoreCheckInterval = 300 * time.Millisecond
	h := newHarness(t, cfg)
	for _, user := range []string{"before", "consumed", "unconsumed", "after", "consumed2", "unconsumed2", "later"} {
		h.registerTokens(user, 2)
	}
	ctx := context.Background()

	// The old cluster's life: one event delivered, so the group has a position.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.herald.Run(runCtx) }()
	before := h.raise(true, comment("c0", "ann", "before"))[0]
	testutil.WaitDelivered(t, h.pool, before.ID(), 10*time.Second)
	stop()
	require.NoError(t, <-done)

	// The dump held two more events: one the relay had consumed, one it had
	// not. (A consumed event was expanded then; here it never was, so any
	// push for it would show it read twice.)
	h.raise(true, comment("c1", "ann", "consumed"))
	consumed := h.lastOutboxRow()
	unconsumedN := h.raise(true, comment("c2", "ann", "unconsumed"))[0]
	unconsumed := h.lastOutboxRow()
	h.simulateLogicalRestore([]int64{consumed}, []int64{unconsumed})
	// An event raised on the new cluster before Herald starts.
	after := h.raise(true, comment("c3", "ann", "after"))[0]

	// Herald starts on the restored database: the check at start repairs.
	runCtx, stop = context.WithCancel(ctx)
	defer stop()
	done = make(chan error, 1)
	go func() { done <- h.herald.Run(runCtx) }()
	testutil.WaitDelivered(t, h.pool, unconsumedN.ID(), 15*time.Second)
	testutil.WaitDelivered(t, h.pool, after.ID(), 15*time.Second)
	testutil.WaitIdle(t, h.pool, 10*time.Second)
	assert.Equal(t, int64(1), h.herald.Stats().Relay.RestoredOffsetsRepaired)

	// A cut-over under the running process: the periodic check repairs.
	// The old cluster had consumed (and pushed) one event and not another.
	consumed2N := h.raise(true, comment("c4", "ann", "consumed2"))[0]
	consumed2 := h.lastOutboxRow()
	testutil.WaitDelivered(t, h.pool, consumed2N.ID(), 15*time.Second)
	unconsumed2N := h.simulateLogicalRestore([]int64{consumed2}, nil, comment("c5", "ann", "unconsumed2"))[0]
	later := h.raise(true, comment("c6", "ann", "later"))[0]
	testutil.WaitDelivered(t, h.pool, unconsumed2N.ID(), 15*time.Second)
	testutil.WaitDelivered(t, h.pool, later.ID(), 15*time.Second)
	testutil.WaitIdle(t, h.pool, 10*time.Second)
	assert.Equal(t, int64(2), h.herald.Stats().Relay.RestoredOffsetsRepaired)

	// Every unconsumed or new event reached each device once; the
	// consumed ones were not read again (consumed2 was pushed once, before
	// the cut-over; consumed never).
	counts := map[string]int{}
	for _, r := range h.fake.Accepted() {
		counts[r.Token[:strings.Index(r.Token, "-device-")]]++
	}
	assert.Equal(t, map[string]int{"before": 2, "unconsumed": 2, "after": 2, "consumed2": 2, "unconsumed2": 2, "later": 2}, counts)
	var repairs int
	for _, r := range logs.since(0, slog.LevelError) {
		if strings.Contains(r.Message, "outbox position was ahead") {
			repairs++
		}
	}
	assert.Equal(t, 2, repairs, "each repair is logged once, as an error")
	stop()
	require.NoError(t, <-done)
}

func TestHousekeepingNeverDeletesEventsARestoreMadeLookConsumed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 2)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.herald.Run(runCtx) }()
	first := h.raise(true, comment("m1", "ann", "author"))[0]
	testutil.WaitDelivered(t, h.pool, first.ID(), 10*time.Second)
	stop()
	require.NoError(t, <-done)

	// Restored; an event raised on the new cluster waits while no relay
	// runs (a deploy, an outage) past the outbox retention.
	h.simulateLogicalRestore(nil, nil)
	waiting := h.raise(true, comment("m2", "ann", "author"))[0]
	// Housekeeping measures ages on the database's clock: age the rows.
	_, err := h.pool.Exec(ctx, `UPDATE watermill_herald_outbox SET created_at = created_at - interval '2 hours'`)
	require.NoError(t, err)
	hk, err := app.NewHousekeeper(adapters.NewPostgresHousekeepingRepository(h.pool), app.HousekeepingConfig{})
	require.NoError(t, err)
	report, err := hk.Sweep(ctx)
	require.NoError(t, err)
	assert.Zero(t, report.OutboxRows, "nothing is consumed while the position is a restored one")

	h.run()
	testutil.WaitDelivered(t, h.pool, waiting.ID(), 15*time.Second)
}
