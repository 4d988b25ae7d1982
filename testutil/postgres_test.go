package testutil_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/migrations"
	"github.com/herald-push/herald/testutil"
)

func TestNewPool_GivesMigratedDatabase(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)

	var deliveries *string
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT to_regclass('herald_deliveries')::text`).Scan(&deliveries))
	require.NotNil(t, deliveries, "herald_deliveries does not exist")

	require.Equal(t, allVersions(t), appliedVersions(t, pool))
}

func TestNewPool_TestsGetSeparateDatabases(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		names []string
	)
	// Both subtests insert the same primary key: each sees only its own row.
	t.Run("group", func(t *testing.T) {
		for _, name := range []string{"first", "second"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				pool := testutil.NewPool(t)
				insertToken(t, pool, "shared-token")
				require.Equal(t, 1, countTokens(t, pool))

				var db string
				require.NoError(t, pool.QueryRow(t.Context(), `SELECT current_database()`).Scan(&db))
				mu.Lock()
				names = append(names, db)
				mu.Unlock()
			})
		}
	})
	require.Len(t, names, 2)
	require.NotEqual(t, names[0], names[1])
}

func TestNewPool_WritesAreInvisibleToOtherDatabases(t *testing.T) {
	t.Parallel()
	written, other := testutil.NewPool(t), testutil.NewPool(t)
	insertToken(t, written, "only-here")

	require.Equal(t, 1, countTokens(t, written))
	require.Equal(t, 0, countTokens(t, other))
}

// TestNewPool_ManyAtOnce creates 20 databases at the same moment: subtests started from
// their own goroutines are not held back by -parallel, as t.Parallel subtests would be.
func TestNewPool_ManyAtOnce(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			t.Run(fmt.Sprintf("pool%02d", i), func(t *testing.T) {
				pool := testutil.NewPool(t)
				require.Equal(t, allVersions(t), appliedVersions(t, pool))
			})
		})
	}
	wg.Wait()
}

func TestNewDatabase_URLConnects(t *testing.T) {
	t.Parallel()
	url := testutil.NewDatabase(t)
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })

	var db string
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT current_database()`).Scan(&db))
	require.Contains(t, db, "newdatabase_urlconnects")
	require.LessOrEqual(t, len(db), 63)
}

func TestMigrationsUp_ConcurrentCallsApplyOnce(t *testing.T) {
	t.Parallel()
	url := testutil.NewDatabase(t)
	ctx := t.Context()

	// The database comes migrated: revert everything so that the racing Up calls have work to do.
	want := allVersions(t)
	first := newPool(t, url)
	reverted, err := migrations.Down(ctx, first, len(want))
	require.NoError(t, err)
	require.ElementsMatch(t, want, reverted)
	require.Empty(t, appliedVersions(t, first))

	const callers = 8
	pools := make([]*pgxpool.Pool, callers)
	for i := range pools {
		pools[i] = newPool(t, url)
	}
	applied := make([][]int, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i, pool := range pools {
		wg.Go(func() { applied[i], errs[i] = migrations.Up(ctx, pool) })
	}
	wg.Wait()

	var all []int
	for i := range callers {
		require.NoError(t, errs[i], "caller %d", i)
		all = append(all, applied[i]...)
	}
	require.ElementsMatch(t, want, all, "each version is applied by exactly one caller")
	require.Equal(t, want, appliedVersions(t, first))
}

func TestMigrations_DownThenUpRoundTrips(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := t.Context()

	want := allVersions(t)
	latest := want[len(want)-1]

	// One step back and forth, then all the way.
	reverted, err := migrations.Down(ctx, pool, 1)
	require.NoError(t, err)
	require.Equal(t, []int{latest}, reverted)
	require.Equal(t, want[:len(want)-1], appliedVersions(t, pool))
	applied, err := migrations.Up(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, []int{latest}, applied)

	reverted, err = migrations.Down(ctx, pool, len(want))
	require.NoError(t, err)
	require.Len(t, reverted, len(want))
	require.Empty(t, appliedVersions(t, pool))
	var deliveries *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT to_regclass('herald_deliveries')::text`).Scan(&deliveries))
	require.Nil(t, deliveries, "herald_deliveries survived Down")

	applied, err = migrations.Up(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, want, applied)
	require.Equal(t, want, appliedVersions(t, pool))
	insertToken(t, pool, "after-round-trip")
}

func TestCluster_RestartKillsConnectionsAndPoolReconnects(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cluster, err := testutil.StartCluster(ctx, testutil.ClusterConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cluster.Stop()) })

	url := cluster.URL("postgres")
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	// Check connections on every acquire, not only after a second idle: the restart is faster.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	require.NoError(t, pool.Ping(ctx))
	require.NoError(t, conn.Ping(ctx))

	for _, immediate := range []bool{true, false} {
		require.NoError(t, cluster.Restart(ctx, immediate), "immediate=%v", immediate)

		var one int
		require.NoError(t, pool.QueryRow(ctx, `SELECT 1`).Scan(&one), "immediate=%v", immediate)
		require.Equal(t, 1, one)
	}
	require.Error(t, conn.Ping(ctx), "a connection from before the restart still works")
}

func TestCluster_StopIsIdempotentAndRemovesFiles(t *testing.T) {
	t.Parallel()
	cluster, err := testutil.StartCluster(t.Context(), testutil.ClusterConfig{})
	require.NoError(t, err)
	dataDir := filepath.Dir(cluster.LogPath())
	require.DirExists(t, dataDir)

	require.NoError(t, cluster.Stop())
	require.NoError(t, cluster.Stop())
	require.NoDirExists(t, dataDir)
	_, err = pgx.Connect(t.Context(), cluster.URL("postgres"))
	require.Error(t, err, "the server still accepts connections")
	require.Error(t, cluster.Restart(t.Context(), false))
}

func TestCluster_StartReapsClustersOfDeadProcesses(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := clusterRoot(t)

	stale, err := testutil.StartCluster(ctx, testutil.ClusterConfig{Dir: root})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, stale.Stop()) })
	staleDir := filepath.Dir(filepath.Dir(stale.LogPath()))
	// Hand the cluster to a process that has exited, as if its test binary had been killed.
	// The start time 0 matches no process, should the pid be in use again already.
	exited := exec.Command("true")
	require.NoError(t, exited.Run())
	owner := fmt.Sprintf("%d 0\n", exited.Process.Pid)
	require.NoError(t, os.WriteFile(filepath.Join(staleDir, "owner"), []byte(owner), 0o644))

	fresh, err := testutil.StartCluster(ctx, testutil.ClusterConfig{Dir: root})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, fresh.Stop()) })

	require.NoDirExists(t, staleDir)
	_, err = pgx.Connect(ctx, stale.URL("postgres"))
	require.Error(t, err, "the stale cluster's server still runs")
	// The stale files are deleted in the background.
	require.Eventually(t, func() bool {
		entries, err := os.ReadDir(root)
		return err == nil && len(entries) == 1
	}, 30*time.Second, 50*time.Millisecond, "only the fresh cluster is left")
}

// Test binaries start clusters side by side, each reaping the others' dead
// ones first: one must never take a live cluster whose owner file it reads
// empty (caught between its creation and its write) for a dead one.
func TestCluster_StartNeverReapsAClusterWhoseOwnerFileItReadsEmpty(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := clusterRoot(t)

	live, err := testutil.StartCluster(ctx, testutil.ClusterConfig{Dir: root})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, live.Stop()) })
	liveDir := filepath.Dir(filepath.Dir(live.LogPath()))
	require.NoError(t, os.WriteFile(filepath.Join(liveDir, "owner"), nil, 0o644))

	other, err := testutil.StartCluster(ctx, testutil.ClusterConfig{Dir: root})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, other.Stop()) })

	require.DirExists(t, liveDir)
	conn, err := pgx.Connect(ctx, live.URL("postgres"))
	require.NoError(t, err, "the live cluster's server was stopped")
	require.NoError(t, conn.Close(ctx))
}

func TestSharedCluster_IsTheOneNewDatabaseUses(t *testing.T) {
	t.Parallel()
	if os.Getenv("HERALD_TEST_DATABASE_URL") != "" {
		t.Skip("HERALD_TEST_DATABASE_URL is set: there is no shared cluster")
	}
	url := testutil.NewDatabase(t)
	cluster, err := testutil.SharedCluster()
	require.NoError(t, err)
	require.NotNil(t, cluster)
	cfg, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	require.Equal(t, uint16(cluster.Port()), cfg.Port)
}

// clusterRoot returns a directory of this test's own for clusters, removed
// when it ends. Not t.TempDir: when we are root, the postgres user must be
// able to enter it.
func clusterRoot(t *testing.T) string {
	t.Helper()
	root, err := os.MkdirTemp("", "herald-reap-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(root, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	return root
}

func newPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// allVersions returns the versions of every migration, in order.
func allVersions(t *testing.T) []int {
	t.Helper()
	all, err := migrations.All()
	require.NoError(t, err)
	require.NotEmpty(t, all)
	versions := make([]int, len(all))
	for i, m := range all {
		versions[i] = m.Version
	}
	return versions
}

func appliedVersions(t *testing.T, pool *pgxpool.Pool) []int {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT version FROM herald_schema_migrations ORDER BY version`)
	require.NoError(t, err)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return append([]int{}, versions...) // never nil: comparable with an empty want
}

func insertToken(t *testing.T, pool *pgxpool.Pool, token string) {
	t.Helper()
	_, err := pool.Exec(t.Context(), `INSERT INTO herald_device_tokens
		(token, user_id, platform, registered_at, last_seen_at) VALUES ($1, 'u1', 'android', now(), now())`, token)
	require.NoError(t, err)
}

func countTokens(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM herald_device_tokens`).Scan(&n))
	return n
}
