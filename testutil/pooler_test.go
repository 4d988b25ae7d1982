package testutil_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/migrations"
	"github.com/herald-push/herald/testutil"
)

// backendPID returns the Postgres backend serving conn's next statement.
func backendPID(t *testing.T, ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) int {
	t.Helper()
	var pid int
	require.NoError(t, q.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	return pid
}

func TestNewPoolerPoolReachesAMigratedDatabaseThroughPgBouncerInTransactionMode(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testutil.NewPoolerPool(t)
	require.Equal(t, pgx.QueryExecModeCacheDescribe, pool.Config().ConnConfig.DefaultQueryExecMode,
		"a pool through a transaction pooler must not use named prepared statements")

	// Transaction pooling: a client connection has no session of its own.
	// One client's statement leaves its server connection free, and the
	// next client's transaction takes it (pgbouncer hands out the server
	// connection released last).
	a, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer a.Release()
	b, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer b.Release()
	first := backendPID(t, ctx, a)
	tx, err := b.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	held := backendPID(t, ctx, tx)
	again := backendPID(t, ctx, a)
	assert.True(t, held == first || again != first,
		"two client connections share backends (a's %d, then b's transaction %d, then a's %d)", first, held, again)

	applied, err := migrations.Up(ctx, pool)
	require.NoError(t, err)
	assert.Empty(t, applied, "the database is migrated")
}

func TestMigrationsUpRacingThroughPgBouncerAppliesEachMigrationOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testutil.NewPoolerPool(t)
	all, err := migrations.All()
	require.NoError(t, err)
	reverted, err := migrations.Down(ctx, pool, len(all))
	require.NoError(t, err)
	require.Len(t, reverted, len(all))

	// Eight instances start at once through the pooler: the migration lock
	// is transaction-scoped, so no session keeps it, and each migration is
	// applied by exactly one of them.
	var wg sync.WaitGroup
	results := make([][]int, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = migrations.Up(ctx, pool)
		}()
	}
	wg.Wait()
	applied := map[int]int{}
	for i := range results {
		require.NoError(t, errs[i])
		for _, v := range results[i] {
			applied[v]++
		}
	}
	require.Len(t, applied, len(all))
	for v, n := range applied {
		assert.Equal(t, 1, n, "migration %d applied %d times", v, n)
	}
	var locks int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'`).Scan(&locks))
	assert.Zero(t, locks, "no advisory lock is left on any server session")
}
