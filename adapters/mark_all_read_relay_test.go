package adapters_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

// The relay expands one outbox message at a time, for every user. A
// notification with a collapse key supersedes the older ones of its key,
// which locks their rows. MarkAllRead for a user with hundreds of
// thousands of unread notifications was one statement holding the lock on
// every one of them until it ended: the relay's supersede for that user
// waited for the whole of it, and every other user's notifications queued
// behind the relay with it.
func TestMarkingHundredsOfThousandsReadNeverHoldsUpTheRelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	const unread = 300_000
	_, err := pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, collapse_key, created_at)
		SELECT gen_random_uuid(), 'reader', 't', 'n', CASE WHEN g <= 10 THEN 'score' END,
			now() - interval '1 hour' + g * interval '1 ms'
		FROM generate_series(1, $1) g`, unread)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `ANALYZE herald_notifications`)
	require.NoError(t, err)
	insertToken(t, pool, "reader", "reader-phone")
	newest := uuid.New()
	_, err = pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, collapse_key, created_at)
		VALUES ($1, 'reader', 't', 'newest', 'score', now())`, newest)
	require.NoError(t, err)

	type result struct {
		n    int
		took time.Duration
		err  error
	}
	marked := make(chan result, 1)
	go func() {
		start := time.Now()
		n, err := adapters.NewPostgresNotificationRepository(pool).MarkAllRead(ctx, "reader", time.Now())
		marked <- result{n, time.Since(start), err}
	}()
	// Once the marking runs, the relay expands the newest notification of
	// the key, as it does, in a REPEATABLE READ transaction.
	require.Eventually(t, func() bool {
		var running bool
		require.NoError(t, pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE state = 'active' AND query LIKE '%SET read_at%' AND query NOT LIKE '%pg_stat_activity%')`).Scan(&running))
		return running
	}, 10*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		_, err := adapters.NewPostgresDeliveryRepository(tx).Expand(ctx, []uuid.UUID{newest})
		return err
	})
	relayWaited := time.Since(start)
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")) {
		require.NoError(t, err, "the relay's expansion works, or meets a serialization failure or deadlock it retries at once")
	}
	r := <-marked
	require.NoError(t, r.err)
	// The relay may supersede the older notifications of the key before
	// the marking reaches them: those leave the inbox unread.
	var superseded, left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE superseded_at IS NOT NULL),
		count(*) FILTER (WHERE superseded_at IS NULL) FROM herald_notifications WHERE read_at IS NULL`).Scan(&superseded, &left))
	assert.Zero(t, left, "every unread notification in the inbox is marked")
	assert.Equal(t, unread+1-superseded, r.n, "and the count returned")
	t.Logf("MarkAllRead of %d took %s; the relay's expansion waited %s (err %v)", r.n, r.took, relayWaited, err)
	assert.Less(t, relayWaited, r.took/4, "the relay waits for a bounded piece of the marking, not the whole of it")
}
