package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/testutil"
)

// A logical dump of a database whose relay was stopped (or never ran) while
// events were raised, restored into a cluster whose transaction ids are
// behind the rows': the relay's position is not ahead of the new cluster
// (there is none, or an old one below the new counter), so the repair never
// ran, and rows carrying ids the new cluster has not reached stayed
// invisible to the relay until its counter passed them: a million
// transactions here, forever in practice.
func TestAnEventRestoredAheadOfTheDatabasesTransactionIdsIsDeliveredWhereverThePositionStands(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		noPosition bool
	}{{"the relay never ran before the dump", true}, {"the relay had fallen behind before the dump", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := fastConfig()
			cfg.Relay.RestoreCheckInterval = 300 * time.Millisecond
			h := newHarness(t, cfg)
			h.registerTokens("author", 2)
			if !tc.noPosition {
				// The old cluster's relay ran for a while, then stopped.
				runCtx, stop := context.WithCancel(ctx)
				done := make(chan error, 1)
				go func() { done <- h.herald.Run(runCtx) }()
				first := h.raise(true, comment("c0", "ann", "author"))[0]
				testutil.WaitDelivered(t, h.pool, first.ID(), 10*time.Second)
				stop()
				require.NoError(t, <-done)
			}
			waiting := h.raise(true, comment("c1", "ann", "author"))[0]
			// Restored: the unconsumed row keeps the old cluster's id, a
			// million past this cluster's counter.
			_, err := h.pool.Exec(ctx, `UPDATE watermill_herald_outbox
				SET transaction_id = (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000)::text::xid8
				WHERE "offset" = $1`, h.lastOutboxRow())
			require.NoError(t, err)
			if tc.noPosition {
				_, err := h.pool.Exec(ctx, `DELETE FROM watermill_offsets_herald_outbox`)
				require.NoError(t, err)
			}
			after := h.raise(true, comment("c2", "ann", "author"))[0]

			h.run()
			testutil.WaitDelivered(t, h.pool, after.ID(), 15*time.Second)
			testutil.WaitDelivered(t, h.pool, waiting.ID(), 15*time.Second)
			testutil.WaitIdle(t, h.pool, 10*time.Second)
		})
	}
}
