package adapters_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/testutil"
)

// TestRetryingFailedDeliveriesByCodeReadsEachFailedDeliveryOnceNotOncePerBatch:
// retrying the failed deliveries with one code goes in batches of
// RetryBatch; the failed deliveries with other codes (here 40,000 that
// failed before the 10,000 to retry, among 100,000 sent) are read once in
// all, not again by each of the 11 batches, so the cost of a retry by
// filter stays linear in the failed deliveries. Every delivery with the
// code is retried, no other.
func TestRetryingFailedDeliveriesByCodeReadsEachFailedDeliveryOnceNotOncePerBatch(t *testing.T) {
	ctx := context.Background()
	pool := testutil.NewPool(t)
	for _, sql := range []string{
		`INSERT INTO herald_notifications (id, recipient, type, created_at) VALUES ('00000000-0000-0000-0000-000000000001', 'u', 't', now())`,
		`INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at, error_code, attempts)
			SELECT '00000000-0000-0000-0000-000000000001', 'tok-' || g, CASE WHEN g <= 50000 THEN 'failed' ELSE 'sent' END, now(), now(),
				now() - interval '1 hour' + g * interval '1 millisecond', CASE WHEN g <= 40000 THEN 'INTERNAL' WHEN g <= 50000 THEN 'UNAVAILABLE' ELSE '' END, 5
			FROM generate_series(1, 150000) g`,
		`ANALYZE herald_deliveries`,
	} {
		_, err := pool.Exec(ctx, sql)
		require.NoError(t, err)
	}
	// One connection of its own, whose statistics it flushes: the rows
	// and index entries the retry read are then in the statistics views.
	conn, err := pgx.Connect(ctx, pool.Config().ConnConfig.ConnString())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	read := func() int64 {
		t.Helper()
		_, err := conn.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
		require.NoError(t, err)
		var n int64
		require.NoError(t, conn.QueryRow(ctx, `SELECT coalesce(seq_tup_read, 0)
				+ (SELECT sum(idx_tup_read) FROM pg_stat_user_indexes WHERE relname = 'herald_deliveries')
			FROM pg_stat_user_tables WHERE relname = 'herald_deliveries'`).Scan(&n))
		return n
	}
	repo := adapters.NewPostgresDeliveryRepository(conn)
	limited, err := repo.RetryFailedWhere(ctx, app.DeliveryQuery{Code: "UNAVAILABLE", Limit: 2500}, nil)
	require.NoError(t, err)
	assert.Equal(t, 2500, limited, "a Limit across batches is kept exactly")
	before := read()

	n, err := repo.RetryFailedWhere(ctx, app.DeliveryQuery{Code: "UNAVAILABLE"}, nil)
	require.NoError(t, err)
	assert.Equal(t, 7500, n, "the rest")
	tuples := read() - before
	t.Logf("rows and index entries read: %d", tuples)
	// One pass over the table (the planner may scan it for the first
	// batch) and one over the failed deliveries' index, not one a batch.
	assert.Less(t, tuples, int64(2*150000), "a batch of %d reads from where the one before it stopped", adapters.RetryBatch)

	var failed, pending int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'failed' AND error_code = 'INTERNAL'),
		count(*) FILTER (WHERE status = 'pending' AND error_code = 'UNAVAILABLE') FROM herald_deliveries`).Scan(&failed, &pending))
	assert.Equal(t, 40000, failed)
	assert.Equal(t, 10000, pending)
}
