package testutil

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/migrations"
)

// databaseURLEnv names the environment variable with the URL of a Postgres server that
// NewDatabase uses instead of starting its own cluster.
const databaseURLEnv = "HERALD_TEST_DATABASE_URL"

// templateLockID is the advisory lock (in the server's maintenance database) under which a
// template database is built, so that test binaries sharing a server build it once. It is the
// bytes of "herald_t" read as an integer, and differs from the migrations' lock.
const templateLockID int64 = 0x686572616c645f74

// databaseTimeout bounds creating or dropping one test database.
const databaseTimeout = time.Minute

// shared is the per-binary state behind NewDatabase, NewPool, SharedCluster and Main.
var shared struct {
	once   sync.Once
	err    error
	server *databaseServer
}

// databaseServer creates test databases from a migrated template on one Postgres server.
type databaseServer struct {
	cluster  *Cluster // nil when HERALD_TEST_DATABASE_URL is used
	baseURL  string   // a database to connect to for CREATE and DROP DATABASE
	admin    *pgxpool.Pool
	template string

	// createMu serialises CREATE DATABASE: Postgres refuses to copy a template while another
	// session is connected to it, and concurrent copies only compete for the same disk.
	createMu sync.Mutex
	// nameTag and seq make database names unique across binaries and within one.
	nameTag string
	seq     atomic.Uint64
}

// NewDatabase returns the URL of a fresh database with Herald's migrations applied, and drops
// the database when the test ends (t.Cleanup), terminating any connection left open to it.
//
// The database lives on the server named by HERALD_TEST_DATABASE_URL if that is set (the
// role needs CREATEDB; the URL's database is used for CREATE and DROP DATABASE), otherwise on
// a throwaway cluster shared by the whole test binary: started by the first call, stopped by
// Main. Either way the migrations run once, into a template database whose name carries a
// hash of the migration files, and every test database is a copy of it (CREATE DATABASE ...
// TEMPLATE: some 25ms on the throwaway cluster, more on a server with fsync on). On a shared server templates stay for the next run, and a
// changed schema gets a new template.
//
// The database's name is derived from t.Name() and unique per test and binary. NewDatabase
// is safe to call from parallel tests. It fails the test if it cannot make the database.
func NewDatabase(t testing.TB) string {
	t.Helper()
	server, err := sharedServer()
	if err != nil {
		t.Fatalf("testutil.NewDatabase: %v", err)
	}
	name := server.databaseName(t.Name())
	url, err := databaseURL(server.baseURL, name)
	if err != nil {
		t.Fatalf("testutil.NewDatabase: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), databaseTimeout)
	defer cancel()
	if err := server.createDatabase(ctx, name); err != nil {
		t.Fatalf("testutil.NewDatabase: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), databaseTimeout)
		defer cancel()
		if err := server.dropDatabase(ctx, name); err != nil {
			t.Errorf("testutil.NewDatabase: %v", err)
		}
	})
	return url
}

// NewPool returns a pgxpool connected to a fresh database from NewDatabase. The pool has at
// most 10 connections unless HERALD_TEST_DATABASE_URL sets pool_max_conns. It is closed when
// the test ends, before the database is dropped. NewPool fails the test if it cannot connect.
//
// With HERALD_TEST_POOLER=pgbouncer (see PoolerEnv) the pool goes through pgbouncer in
// transaction pooling mode, as NewPoolerPool's does; it fails the test if pgbouncer cannot
// be started.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	url := NewDatabase(t)
	if poolerRequested(t) {
		b, err := sharedBouncer(t)
		if err != nil {
			t.Fatalf("testutil.NewPool: %s=pgbouncer: %v", PoolerEnv, err)
		}
		return newPool(t, poolerURL(t, b, url), PoolerExecMode)
	}
	return newPool(t, url, pgx.QueryExecModeCacheStatement)
}

// newPool connects a pool of at most 10 connections (unless url sets pool_max_conns) in
// exec mode mode, unless url sets default_query_exec_mode, and closes it when the test ends.
func newPool(t testing.TB, url string, mode pgx.QueryExecMode) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("testutil.NewPool: %v", err)
	}
	if !strings.Contains(url, "default_query_exec_mode") {
		cfg.ConnConfig.DefaultQueryExecMode = mode
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = 10
	}
	ctx, cancel := context.WithTimeout(context.Background(), databaseTimeout)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("testutil.NewPool: %v", err)
	}
	t.Cleanup(pool.Close) // registered after the drop, so it runs before it
	if err := pool.Ping(ctx); err != nil {
		t.Fatalf("testutil.NewPool: %v", err)
	}
	return pool
}

// SharedCluster returns the throwaway cluster that NewDatabase uses, starting it if no test
// has yet, for tests that need to restart Postgres under NewDatabase's databases. Restarting
// it breaks the connections of every test in the binary that uses it, so such tests should
// not run in parallel with others (or should start their own cluster with StartCluster).
// Do not Stop it: Main does. It returns nil and no error when HERALD_TEST_DATABASE_URL is set.
func SharedCluster() (*Cluster, error) {
	server, err := sharedServer()
	if err != nil {
		return nil, err
	}
	return server.cluster, nil
}

// Main runs the tests and then stops the shared cluster if one was started, deleting its
// files, and returns the exit code for os.Exit. Use it in TestMain of every package that
// calls NewDatabase or NewPool:
//
//	func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }
//
// Without it the cluster's server is stopped when the test binary exits (on Linux) and its
// files are removed by a later StartCluster.
func Main(m *testing.M) int {
	code := m.Run()
	if err := stopBouncer(); err != nil {
		fmt.Fprintf(os.Stderr, "testutil.Main: %v\n", err)
	}
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "testutil.Main: %v\n", err)
	}
	return code
}

// sharedServer returns the binary's database server, setting it up on first use.
func sharedServer() (*databaseServer, error) {
	shared.once.Do(func() {
		shared.server, shared.err = startDatabaseServer()
	})
	return shared.server, shared.err
}

// stopShared stops the binary's database server, if it was set up, and makes later calls to
// sharedServer fail rather than start a cluster that nothing would stop.
func stopShared() error {
	stopped := true
	shared.once.Do(func() {
		stopped = false
		shared.err = errors.New("the shared database server is stopped: testutil.Main has returned")
	})
	if !stopped || shared.server == nil {
		return nil
	}
	shared.server.admin.Close()
	if shared.server.cluster == nil {
		return nil
	}
	return shared.server.cluster.Stop()
}

func startDatabaseServer() (*databaseServer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	tag := make([]byte, 3)
	_, _ = rand.Read(tag) // crypto/rand.Read never fails
	s := &databaseServer{baseURL: os.Getenv(databaseURLEnv), nameTag: fmt.Sprintf("%d_%x", os.Getpid(), tag)}
	if s.baseURL == "" {
		cluster, err := StartCluster(ctx, ClusterConfig{})
		if err != nil {
			return nil, fmt.Errorf("start the shared cluster: %w", err)
		}
		s.cluster = cluster
		s.baseURL = cluster.URL("postgres")
	}
	err := s.setUp(ctx)
	if err != nil && s.cluster != nil {
		err = errors.Join(err, s.cluster.Stop())
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// setUp connects to the server and makes sure the template database exists.
func (s *databaseServer) setUp(ctx context.Context) error {
	cfg, err := pgxpool.ParseConfig(s.baseURL)
	if err != nil {
		return fmt.Errorf("parse %s: %w", databaseURLEnv, err)
	}
	cfg.MaxConns = 4
	// A test may restart the server (SharedCluster().Restart): check every connection before
	// use so that creating and dropping databases survives that.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	s.admin, err = pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = s.admin.Ping(ctx)
	}
	if err != nil {
		if s.cluster == nil {
			return fmt.Errorf("connect to the server in %s: %w", databaseURLEnv, err)
		}
		return fmt.Errorf("connect to the shared cluster: %w", err)
	}
	hash, err := migrationsHash()
	if err != nil {
		s.admin.Close()
		return err
	}
	s.template = "herald_template_" + hash
	if err := s.ensureTemplate(ctx); err != nil {
		s.admin.Close()
		return fmt.Errorf("template database %s: %w", s.template, err)
	}
	return nil
}

// ensureTemplate builds the template database unless it exists. It migrates a database
// under a temporary name, closes every connection to it and forbids new ones, then renames it:
// a template under its final name is always complete, and test binaries sharing a server
// build it once (under an advisory lock).
func (s *databaseServer) ensureTemplate(ctx context.Context) (err error) {
	conn, err := s.admin.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, templateLockID); err != nil {
		return fmt.Errorf("take template lock: %w", err)
	}
	defer func() {
		if _, unlockErr := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, templateLockID); unlockErr != nil {
			err = errors.Join(err, fmt.Errorf("release template lock: %w", unlockErr))
		}
	}()

	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`,
		s.template).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	building := s.template + "_building"
	// Left by a process that died while building: nobody else builds under the lock.
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+ident(building)); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+ident(building)+` TEMPLATE template0`); err != nil {
		return err
	}
	if err := migrate(ctx, s.baseURL, building); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `ALTER DATABASE `+ident(building)+` WITH ALLOW_CONNECTIONS false`); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, `ALTER DATABASE `+ident(building)+` RENAME TO `+ident(s.template))
	return err
}

// migrate applies Herald's migrations to database name and closes its connections.
func migrate(ctx context.Context, baseURL, name string) error {
	url, err := databaseURL(baseURL, name)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := migrations.Up(ctx, pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// createDatabase creates database name as a copy of the template.
func (s *databaseServer) createDatabase(ctx context.Context, name string) error {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if _, err := s.admin.Exec(ctx, `CREATE DATABASE `+ident(name)+` TEMPLATE `+ident(s.template)); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// dropDatabase drops database name, terminating its sessions.
func (s *databaseServer) dropDatabase(ctx context.Context, name string) error {
	// Sessions just closed by the test take a moment to end. DROP DATABASE would wait for them
	// too, but in steps of 100ms: watching them go halves the time a test's cleanup takes.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		var sessions int
		err := s.admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, name).Scan(&sessions)
		if err != nil || sessions == 0 {
			break // on error, DROP says what is wrong
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, err := s.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+ident(name)+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// databaseName makes a database name from a test name: lower case letters, digits and
// underscores, at most 63 bytes (Postgres' limit), ending in what makes it unique: the binary's
// pid and a random tag (binaries on different machines may share a server), and a sequence
// number.
func (s *databaseServer) databaseName(testName string) string {
	suffix := fmt.Sprintf("_%s_%d", s.nameTag, s.seq.Add(1))
	var b strings.Builder
	b.WriteString("t_")
	underscore := true
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
			underscore = false
		case !underscore:
			b.WriteByte('_')
			underscore = true
		}
	}
	prefix := strings.TrimRight(b.String(), "_")
	const maxIdentifier = 63
	if len(prefix)+len(suffix) > maxIdentifier {
		prefix = strings.TrimRight(prefix[:maxIdentifier-len(suffix)], "_")
	}
	return prefix + suffix
}

// databaseURL returns base with its database replaced by name. base is a URL or a
// keyword/value connection string.
func databaseURL(base, name string) (string, error) {
	if !strings.HasPrefix(base, "postgres://") && !strings.HasPrefix(base, "postgresql://") {
		// Keyword/value: a later keyword wins. Names are plain identifiers: no quoting needed.
		return base + " dbname=" + name, nil
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("parse database url: %w", err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// migrationsHash identifies the migration files' names and contents.
func migrationsHash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(body))
		h.Write(body)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// ident quotes a name for SQL.
func ident(name string) string { return pgx.Identifier{name}.Sanitize() }
