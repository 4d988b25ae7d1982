package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

// TestGaugesShowOpenAndFailedDeliveriesTheOldestDueAndDeadLetters: the
// database-wide gauges count deliveries by open status and failed (the
// statuses with partial indexes), report how long the oldest due delivery
// has waited, and the dead letters not replayed; every shown status is
// present, zero or not.
func TestGaugesShowOpenAndFailedDeliveriesTheOldestDueAndDeadLetters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	repo := adapters.NewPostgresDeliveryRepository(pool)

	empty, err := repo.Gauges(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"pending": 0, "retry_scheduled": 0, "claimed": 0, "failed": 0}, empty.Deliveries)
	assert.Zero(t, empty.OldestDueAge)

	seedOpenDeliveries(t, pool, 5) // pending, due an hour ago
	for _, stmt := range []string{
		`UPDATE herald_deliveries SET status = 'failed' WHERE token = 'token-000000001'`,
		`UPDATE herald_deliveries SET status = 'retry_scheduled', due_at = now() + interval '1 hour' WHERE token = 'token-000000002'`,
		`UPDATE herald_deliveries SET status = 'sent' WHERE token = 'token-000000003'`,
		`INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason) VALUES ('t', 'a', '\x00', 'r'), ('t', 'b', '\x00', 'r')`,
		`UPDATE herald_dead_letters SET replayed_at = now() WHERE message_uuid = 'b'`,
	} {
		_, err := pool.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	snap, err := repo.Gauges(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"pending": 2, "retry_scheduled": 1, "claimed": 0, "failed": 1}, snap.Deliveries)
	assert.InDelta(t, time.Hour.Seconds(), snap.OldestDueAge.Seconds(), 60, "the pending deliveries were due an hour ago")
	assert.Equal(t, int64(1), snap.DeadLetters)
}
