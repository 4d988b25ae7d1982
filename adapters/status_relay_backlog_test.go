package adapters_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

// TestStatusReadsTheRelayBacklogPastTheRelaysPositionNotTheConsumedRows:
// housekeeping keeps consumed outbox rows for an hour, which at a busy
// host's rate is millions; the status (every console refresh, every tick of
// `herald status -watch`) reads the backlog from the relay's position
// through the outbox's primary key, not by reading and discarding every
// consumed row. It still counts exactly what is past the position, and
// the whole outbox while the relay has none.
func TestStatusReadsTheRelayBacklogPastTheRelaysPositionNotTheConsumedRows(t *testing.T) {
	ctx := context.Background()
	pool := testutil.NewPool(t)
	repo := adapters.NewPostgresStatusRepository(pool)
	exec := func(sql string) {
		t.Helper()
		_, err := pool.Exec(ctx, sql)
		require.NoError(t, err)
	}
	const consumed = 50_000
	exec(`INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		SELECT gen_random_uuid()::text, '{}', '{}', pg_current_xact_id() FROM generate_series(1, 50000)`)

	s, err := repo.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(consumed), s.Relay.Messages, "no position yet: the whole outbox is the backlog")

	exec(`INSERT INTO watermill_offsets_herald_outbox (consumer_group, offset_acked, last_processed_transaction_id)
		SELECT 'herald_relay', max("offset"), max(transaction_id) FROM watermill_herald_outbox`)
	exec(`INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		SELECT gen_random_uuid()::text, '{}', '{}', pg_current_xact_id() FROM generate_series(1, 3)`)
	exec(`ANALYZE watermill_herald_outbox`)

	s, err = repo.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3), s.Relay.Messages, "only what is past the relay's position")
	assert.False(t, s.Relay.AtLeast)

	var plan []struct {
		Plan struct {
			SharedHitBlocks  int64 `json:"Shared Hit Blocks"`
			SharedReadBlocks int64 `json:"Shared Read Blocks"`
		} `json:"Plan"`
	}
	var raw []byte
	require.NoError(t, pool.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+adapters.RelayBacklogSQL,
		100_001, "herald_relay").Scan(&raw))
	require.NoError(t, json.Unmarshal(raw, &plan))
	require.Len(t, plan, 1)
	// The consumed rows fill some 600 pages; a seek past the position
	// reads a handful.
	blocks := plan[0].Plan.SharedHitBlocks + plan[0].Plan.SharedReadBlocks
	assert.Less(t, blocks, int64(50), "pages read for a backlog of 3 behind %d consumed rows:\n%s", consumed, raw)
}
