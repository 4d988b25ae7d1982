package adapters_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

func probePool(t *testing.T, url string, mode pgx.QueryExecMode) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.ConnConfig.DefaultQueryExecMode = mode
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// busy keeps other clients of pool working until the test ends, as a host's
// traffic would while Herald starts.
func busy(t *testing.T, pool *pgxpool.Pool) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, _ = pool.Exec(ctx, `SELECT pg_sleep(0.001)`)
			}
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestProbePoolerTellsPgBouncerInTransactionModeFromADirectPool(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	direct := testutil.NewDatabase(t)
	pooled := testutil.PoolerURL(t, direct)
	for _, c := range []struct {
		name   string
		url    string
		mode   pgx.QueryExecMode
		pooled bool
		lost   bool
	}{
		{"direct, prepared statements", direct, pgx.QueryExecModeCacheStatement, false, false},
		{"direct, cache describe", direct, pgx.QueryExecModeCacheDescribe, false, false},
		{"pgbouncer, cache describe", pooled, pgx.QueryExecModeCacheDescribe, true, false},
		{"pgbouncer, prepared statements", pooled, pgx.QueryExecModeCacheStatement, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			pool := probePool(t, c.url, c.mode)
			busy(t, pool)
			for range 100 { // the answer does not depend on luck, with others busy on the pool
				probe, err := adapters.ProbePooler(ctx, pool)
				require.NoError(t, err)
				assert.True(t, probe.Known)
				assert.Equal(t, c.pooled, probe.TransactionPooling)
				assert.Equal(t, c.lost, probe.PreparedStatementsLost)
			}
		})
	}
}
