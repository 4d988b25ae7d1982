package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultBouncerPath is where Debian's pgbouncer package installs the binary.
const DefaultBouncerPath = "/usr/sbin/pgbouncer"

// BouncerConfig configures StartBouncer. The zero value is valid.
type BouncerConfig struct {
	// Path is the pgbouncer binary. Defaults to pgbouncer in PATH, else
	// DefaultBouncerPath.
	Path string
	// PoolMode is pgbouncer's pool_mode. Defaults to "transaction", the mode
	// most teams run and the one that breaks whatever needs a session.
	PoolMode string
	// PoolSize is the number of server connections per database (and user).
	// Defaults to 10.
	PoolSize int
}

// Bouncer is a pgbouncer in front of a Cluster: it listens on 127.0.0.1 on its
// own port and pools connections to any database of the cluster (a wildcard
// entry), trusting the postgres user. Its methods are safe for concurrent use.
type Bouncer struct {
	dir     string
	logPath string
	port    int
	mode    string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool
}

// FindBouncer returns the pgbouncer binary: configured if set, else pgbouncer
// in PATH, else DefaultBouncerPath. The error says none is there.
func FindBouncer(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if path, err := exec.LookPath("pgbouncer"); err == nil {
		return path, nil
	}
	if info, err := os.Stat(DefaultBouncerPath); err == nil && !info.IsDir() {
		return DefaultBouncerPath, nil
	}
	return "", errors.New("no pgbouncer in PATH or at " + DefaultBouncerPath + " (apt-get install pgbouncer)")
}

// StartBouncer starts a pgbouncer in front of c and returns once it accepts
// connections. Its files (configuration, log) live in c's directory; when the
// test binary runs as root it runs as the same unprivileged user as the
// server. On Linux it is terminated if this process dies. The caller must
// call Stop (c.Stop does not).
func StartBouncer(ctx context.Context, c *Cluster, cfg BouncerConfig) (*Bouncer, error) {
	path, err := FindBouncer(cfg.Path)
	if err != nil {
		return nil, err
	}
	if cfg.PoolMode == "" {
		cfg.PoolMode = "transaction"
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 10
	}
	dir, err := os.MkdirTemp(c.dir, "pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("pgbouncer directory: %w", err)
	}
	if err := c.user.chown(dir); err != nil {
		return nil, fmt.Errorf("pgbouncer directory: %w", err)
	}
	b := &Bouncer{dir: dir, logPath: filepath.Join(dir, "pgbouncer.log"), mode: cfg.PoolMode}
	for attempt := 1; ; attempt++ {
		err = b.start(ctx, c, path, cfg)
		if err == nil {
			return b, nil
		}
		// A port picked as free may be taken before pgbouncer binds it.
		if attempt == 3 || !strings.Contains(err.Error(), "bind") {
			return nil, err
		}
	}
}

func (b *Bouncer) start(ctx context.Context, c *Cluster, path string, cfg BouncerConfig) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("find a free port: %w", err)
	}
	b.port = ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return fmt.Errorf("find a free port: %w", err)
	}
	users := filepath.Join(b.dir, "userlist.txt")
	ini := filepath.Join(b.dir, "pgbouncer.ini")
	files := map[string]string{
		users: fmt.Sprintf("%q \"\"\n", superuser),
		ini: fmt.Sprintf(`; Written by herald pgcluster.StartBouncer.
[databases]
* = host=127.0.0.1 port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
admin_users = %s
pool_mode = %s
default_pool_size = %d
max_client_conn = 5000
max_db_connections = 0
server_login_retry = 1
server_lifetime = 3600
autodb_idle_timeout = 30
; A LISTEN through the pooler leaves its server connection listening, and
; PgBouncer 1.18 to 1.20 (Debian 12 has 1.18) exit when a notification
; reaches a server connection whose query ended while a cancel request for it
; was being forwarded ("server_proto: server in bad state: 11", fixed in
; 1.21): pgx sends one whenever a context ends mid-query. Undoing every
; LISTEN when its transaction ends keeps notifications off pooled servers.
server_reset_query = UNLISTEN *
server_reset_query_always = 1
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
`, c.port, b.port, users, superuser, cfg.PoolMode, cfg.PoolSize),
	}
	for name, body := range files {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			return fmt.Errorf("write pgbouncer configuration: %w", err)
		}
		if err := c.user.chown(name); err != nil {
			return fmt.Errorf("write pgbouncer configuration: %w", err)
		}
	}
	logFile, err := os.OpenFile(b.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open pgbouncer log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(path, ini)
	cmd.Dir = b.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	c.user.apply(cmd)
	setBouncerDeathSignal(cmd)
	if err := startServerProcess(cmd); err != nil {
		return fmt.Errorf("start pgbouncer: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the log says why
		close(done)
	}()
	b.mu.Lock()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
	if err := b.waitReady(ctx, done); err != nil {
		stopErr := b.kill()
		logTail, _ := readTail(b.logPath)
		return fmt.Errorf("start pgbouncer: %w\nend of pgbouncer log %s:\n%s", errors.Join(err, stopErr), b.logPath, logTail)
	}
	return nil
}

// waitReady polls until pgbouncer accepts a connection to the cluster's
// postgres database, pgbouncer exits, or 30s pass.
func (b *Bouncer) waitReady(ctx context.Context, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.Connect(attemptCtx, b.URL("postgres"))
		cancelAttempt()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-done:
			return errors.New("pgbouncer exited")
		case <-ctx.Done():
			return fmt.Errorf("pgbouncer not accepting connections: %w", errors.Join(ctx.Err(), err))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// URL returns the connection URL of database dbname through the bouncer, as
// the superuser: postgres://postgres@127.0.0.1:port/dbname?sslmode=disable.
// A pgx pool on it must not use named prepared statements in transaction
// mode (see PoolerURL in testutil).
func (b *Bouncer) URL(dbname string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, b.port, dbname)
}

// Port returns the TCP port pgbouncer listens on at 127.0.0.1.
func (b *Bouncer) Port() int { return b.port }

// PoolMode returns pgbouncer's pool_mode.
func (b *Bouncer) PoolMode() string { return b.mode }

// LogPath returns pgbouncer's log file.
func (b *Bouncer) LogPath() string { return b.logPath }

// Stop terminates pgbouncer (every connection through it breaks). It is
// idempotent.
func (b *Bouncer) Stop() error {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return nil
	}
	b.stopped = true
	b.mu.Unlock()
	return b.kill()
}

func (b *Bouncer) kill() error {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := terminate(cmd.Process); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop pgbouncer: %w", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("kill pgbouncer: %w", err)
		}
		<-done
	}
	return nil
}
