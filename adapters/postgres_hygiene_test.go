package adapters_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/migrations"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// seedOpenDeliveries adds n users with one token and one notification each,
// and one open delivery per notification, due an hour ago; then analyses.
func seedOpenDeliveries(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	ctx := context.Background()
	for i, stmt := range []string{
		`INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		 SELECT 'token-' || lpad(g::text, 9, '0'), 'user-' || g, 'android', now(), now() FROM generate_series(1, $1) g`,
		`INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		 SELECT gen_random_uuid(), 'user-' || g, 'test', 'hello ' || g, now() FROM generate_series(1, $1) g`,
		`INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		 SELECT n.id, t.token, 'pending', now() - interval '1 hour', now(), now()
		 FROM herald_notifications n JOIN herald_device_tokens t ON t.user_id = n.recipient`,
	} {
		args := []any{n}
		if i == 2 {
			args = nil
		}
		_, err := pool.Exec(ctx, stmt, args...)
		require.NoError(t, err)
	}
	_, err := pool.Exec(ctx, `ANALYZE`)
	require.NoError(t, err)
}

func TestRecordingAPrunedTokenAmong200kOpenDeliveriesUsesTheTokenIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	seedOpenDeliveries(t, pool, 200_000)
	// A second notification to the first user's token: the sibling that
	// recording the pruned token must close.
	_, err := pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES (gen_random_uuid(), 'user-1', 'test', 'again', now())`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT id, 'token-000000001', 'retry_scheduled', now() + interval '1 hour', now(), now()
		FROM herald_notifications WHERE title = 'again'`)
	require.NoError(t, err)

	repo := adapters.NewPostgresDeliveryRepository(pool)
	claimed, err := repo.ClaimDue(ctx, time.Now(), 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	d := claimed[0].Delivery
	require.Equal(t, "token-000000001", d.Token())
	_, err = d.RecordFailure(&notification.SendError{Class: notification.ErrTokenUnregistered, Code: "UNREGISTERED"},
		notification.RetryPolicy{MaxAttempts: 3}, time.Now(), 0)
	require.NoError(t, err)

	// Record in a transaction of our own, to read that transaction's own
	// scan counters.
	var indexScans, tableSeqScans int64
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		n, err := adapters.NewPostgresDeliveryRepository(tx).Record(ctx, []*notification.Delivery{d})
		if err != nil || n != 1 {
			return errors.Join(err, errors.New("the outcome was not recorded"))
		}
		return tx.QueryRow(ctx, `SELECT pg_stat_get_xact_numscans('herald_deliveries_open_token_idx'::regclass),
			pg_stat_get_xact_numscans('herald_deliveries'::regclass)`).Scan(&indexScans, &tableSeqScans)
	}))
	assert.Positive(t, indexScans, "the siblings were found through the index on open deliveries' tokens")
	assert.Zero(t, tableSeqScans, "no statement scanned herald_deliveries sequentially")

	var siblings int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries
		WHERE token = 'token-000000001' AND status = 'token_pruned'`).Scan(&siblings))
	assert.Equal(t, 2, siblings)
}

func TestFailedDeliveriesAreRetriedInBoundedBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	seedOpenDeliveries(t, pool, 2500)
	_, err := pool.Exec(ctx, `UPDATE herald_deliveries SET status = 'failed', attempts = 12, updated_at = now() - interval '1 minute'`)
	require.NoError(t, err)
	repo := adapters.NewPostgresDeliveryRepository(pool)

	var totals []int
	retried, err := repo.RetryAll(ctx, func(total int) {
		totals = append(totals, total)
		if len(totals) == 1 {
			// The first batch's deliveries fail again at once, while the
			// retry runs: they are not retried a second time.
			_, err := pool.Exec(ctx, `UPDATE herald_deliveries SET status = 'failed', updated_at = now() WHERE status = 'pending'`)
			require.NoError(t, err)
		}
	})
	require.NoError(t, err)
	assert.Equal(t, 2500, retried)
	assert.Equal(t, []int{1000, 2000, 2500}, totals, "one bounded statement per batch")

	counts, err := repo.CountByStatus(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusPending: 1500, notification.StatusFailed: 1000}, counts)

	// Each batch is idempotent: the retried deliveries are pending, so an
	// explicit retry of one changes nothing.
	var pendingID int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT id FROM herald_deliveries WHERE status = 'pending' LIMIT 1`).Scan(&pendingID))
	n, err := repo.RetryFailed(ctx, []int64{pendingID}, adapters.RetryBatch)
	require.NoError(t, err)
	assert.Zero(t, n)
	n, err = repo.RetryFailed(ctx, nil, 10)
	require.NoError(t, err)
	assert.Equal(t, 10, n, "a batch never exceeds its limit")
}

// Postgres logs a WARNING for SET LOCAL outside a transaction block, which
// is what a pgx batch is: operators' logs fill with noise, and real
// warnings drown. Herald's own statements must log none. The test runs its
// own cluster to read a log no other test writes to.
func TestClaimsAndRecordsLogNoWarning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster, err := testutil.StartCluster(ctx, testutil.ClusterConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, cluster.Stop()) })
	pool, err := pgxpool.New(ctx, cluster.URL("postgres"))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = migrations.Up(ctx, pool)
	require.NoError(t, err)
	seedOpenDeliveries(t, pool, 100)
	before, err := os.ReadFile(cluster.LogPath())
	require.NoError(t, err)

	repo := adapters.NewPostgresDeliveryRepository(pool)
	for range 3 {
		claimed, err := repo.ClaimDue(ctx, time.Now(), 20, time.Minute)
		require.NoError(t, err)
		require.Len(t, claimed, 20)
		ds := make([]*notification.Delivery, len(claimed))
		for i, c := range claimed {
			_, err := c.Delivery.RecordFailure(errors.New("boom"), notification.RetryPolicy{MaxAttempts: 1}, time.Now(), 0)
			require.NoError(t, err)
			ds[i] = c.Delivery
		}
		n, err := repo.Record(ctx, ds)
		require.NoError(t, err)
		require.Equal(t, 20, n)
	}
	_, err = repo.RetryAll(ctx, nil)
	require.NoError(t, err)
	tokens := adapters.NewPostgresDeviceTokenRepository(pool)
	tok, err := notification.NewDeviceToken("someone-else", "token-000000001", notification.PlatformIOS, time.Now())
	require.NoError(t, err)
	require.NoError(t, tokens.Upsert(ctx, tok))
	_, err = tokens.Delete(ctx, "token-000000002")
	require.NoError(t, err)
	hk, err := app.NewHousekeeper(adapters.NewPostgresHousekeepingRepository(pool), app.HousekeepingConfig{})
	require.NoError(t, err)
	_, err = hk.Sweep(ctx)
	require.NoError(t, err)

	// The server writes its log asynchronously; a statement after ours
	// that logs (an error is always logged) marks where ours end.
	_, _ = pool.Exec(ctx, `SELECT herald_end_of_test_marker()`)
	var after []byte
	require.Eventually(t, func() bool {
		after, err = os.ReadFile(cluster.LogPath())
		return err == nil && bytes.Contains(after, []byte("herald_end_of_test_marker"))
	}, 10*time.Second, 20*time.Millisecond)
	ours := after[len(before):]
	for _, line := range bytes.Split(ours, []byte("\n")) {
		assert.NotContains(t, string(line), "WARNING")
	}
}
