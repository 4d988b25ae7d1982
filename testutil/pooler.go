package testutil

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/internal/pgcluster"
)

// PoolerEnv names the environment variable that puts PgBouncer between the
// tests and Postgres: with HERALD_TEST_POOLER=pgbouncer, NewPool's pools go
// through a pgbouncer in transaction pooling mode (started by the test kit
// in front of the throwaway cluster) with pgx's exec mode set to
// QueryExecModeCacheDescribe, as a host behind such a pooler must. NewDatabase still
// returns the direct URL. Unset (or "none"), NewPool connects directly.
const PoolerEnv = "HERALD_TEST_POOLER"

// PoolerExecMode is the pgx exec mode of the pools NewPoolerPool (and NewPool
// under HERALD_TEST_POOLER=pgbouncer) make: QueryExecModeCacheDescribe uses
// no named prepared statements (each execution parses the unnamed one again,
// in the same round trip), so it works through a transaction pooler that
// does not keep them (PgBouncer before 1.21, or any without
// max_prepared_statements), and still encodes arguments by the types
// Postgres describes, which Herald and watermill-sql need
// (QueryExecModeExec sends a []byte for a json column as bytea).
const PoolerExecMode = pgx.QueryExecModeCacheDescribe

// bouncer is the binary's pgbouncer, started on first use.
var bouncer struct {
	once      sync.Once
	b         *pgcluster.Bouncer
	err       error
	restarter bouncerRestarter
}

// errNoBouncer marks why no pgbouncer could be started: the binary is absent,
// or the tests use HERALD_TEST_DATABASE_URL rather than a throwaway cluster.
var errNoBouncer = errors.New("no pgbouncer")

// poolerRequested reports whether HERALD_TEST_POOLER asks NewPool to go
// through pgbouncer; an unknown value fails the test.
func poolerRequested(t testing.TB) bool {
	switch v := os.Getenv(PoolerEnv); v {
	case "", "none":
		return false
	case "pgbouncer":
		return true
	default:
		t.Fatalf("testutil: %s=%q: want pgbouncer or none", PoolerEnv, v)
		return false
	}
}

// sharedBouncer returns the binary's pgbouncer (transaction pooling) in front
// of the shared cluster, starting it on first use, and again on the same port
// if it has exited since (saying how in t's log), so that one crash of
// pgbouncer fails only the tests that were using it. Main stops it.
func sharedBouncer(t testing.TB) (*pgcluster.Bouncer, error) {
	t.Helper()
	b, err := startSharedBouncer()
	if err != nil {
		return nil, err
	}
	if err := bouncer.restarter.revive(t, b); err != nil {
		return nil, err
	}
	return b, nil
}

// bouncerRestarter restarts a pgbouncer each time it has exited.
type bouncerRestarter struct {
	mu        sync.Mutex
	restarted int // how many of the bouncer's exits it has restarted from
}

// revive restarts b on its port if it has exited since the last call, saying
// how it exited in t's log.
func (r *bouncerRestarter) revive(t testing.TB, b *pgcluster.Bouncer) error {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	exits, last := b.Exits()
	if exits == r.restarted {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), databaseTimeout)
	defer cancel()
	if err := b.Restart(ctx); err != nil {
		return fmt.Errorf("restart the shared pgbouncer: %w\nIt had died: %v", err, last)
	}
	r.restarted = exits
	t.Logf("testutil: restarted the shared pgbouncer on port %d. It had died: %v", b.Port(), last)
	return nil
}

func startSharedBouncer() (*pgcluster.Bouncer, error) {
	bouncer.once.Do(func() {
		server, err := sharedServer()
		if err != nil {
			bouncer.err = err
			return
		}
		if server.cluster == nil {
			bouncer.err = fmt.Errorf("%w: the tests use the server in %s, not a throwaway cluster", errNoBouncer, databaseURLEnv)
			return
		}
		if _, err := pgcluster.FindBouncer(""); err != nil {
			bouncer.err = fmt.Errorf("%w: %v", errNoBouncer, err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), databaseTimeout)
		defer cancel()
		bouncer.b, bouncer.err = pgcluster.StartBouncer(ctx, server.cluster, pgcluster.BouncerConfig{})
	})
	return bouncer.b, bouncer.err
}

// stopBouncer stops the binary's pgbouncer if one was started, and makes
// later calls fail.
func stopBouncer() error {
	started := true
	bouncer.once.Do(func() {
		started = false
		bouncer.err = errors.New("pgbouncer is stopped: testutil.Main has returned")
	})
	if !started || bouncer.b == nil {
		return nil
	}
	err := bouncer.b.Stop()
	// The tests that were using it when it died say so, but not one that
	// dropped its database as it died: say it once more for the package.
	if exits, last := bouncer.b.Exits(); exits > 0 {
		err = errors.Join(err, fmt.Errorf("the shared pgbouncer died %d times while the tests ran. The last time: %v", exits, last))
	}
	return err
}

// PoolerURL returns the URL of the database at databaseURL (from
// NewDatabase) through a pgbouncer in transaction pooling mode, the mode most
// teams run, started by the test kit in front of the throwaway cluster on
// first use (as the postgres user when the tests run as root) and stopped by
// Main. The URL carries default_query_exec_mode=cache_describe, which pgx
// reads (libpq does not): a pgx pool on it uses no named prepared statements. When the
// test ends, pgbouncer's connections to the database are closed, so that it
// can be dropped at once.
//
// It skips the test, saying why, where pgbouncer is not installed
// (/usr/sbin/pgbouncer, or pgbouncer in PATH) or HERALD_TEST_DATABASE_URL is
// set.
func PoolerURL(t testing.TB, databaseURL string) string {
	t.Helper()
	b, err := sharedBouncer(t)
	if errors.Is(err, errNoBouncer) {
		t.Skipf("testutil.PoolerURL: %v", err)
	}
	if err != nil {
		t.Fatalf("testutil.PoolerURL: %v", err)
	}
	return poolerURL(t, b, databaseURL)
}

func poolerURL(t testing.TB, b *pgcluster.Bouncer, databaseURL string) string {
	t.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatalf("testutil.PoolerURL: %v", err)
	}
	// A pgbouncer that dies under a test shows there only as broken
	// connections: the test says how it died.
	exits, _ := b.Exits()
	t.Cleanup(func() {
		if n, last := b.Exits(); n > exits {
			t.Errorf("testutil: the shared pgbouncer died while this test used it: %v", last)
		}
	})
	// No pgbouncer KILL when the test ends: pgbouncer 1.24 sometimes dies of
	// a segmentation fault on KILL <db> (pgbouncer/pgbouncer#1401), and every
	// later test through the shared pooler failed with it. The test's pool
	// is closed by then, and the database's DROP ... WITH (FORCE) ends the
	// server connections pgbouncer still holds to it.
	return b.URL(strings.TrimPrefix(u.Path, "/"))
}

// NewPoolerPool is NewPool through pgbouncer in transaction pooling mode (see
// PoolerURL), with pgx's QueryExecModeCacheDescribe. It skips the test where pgbouncer
// is not installed.
func NewPoolerPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return newPool(t, PoolerURL(t, NewDatabase(t)), PoolerExecMode)
}
