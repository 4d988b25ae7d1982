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
	ini     string // its configuration file, kept for Restart
	path    string // the binary
	user    *serverUser
	port    int
	mode    string

	startMu sync.Mutex // serialises Restart and Stop

	mu       sync.Mutex
	proc     *bouncerProcess
	stopped  bool
	exits    int   // exits of processes Restart has replaced
	lastExit error // how the last of them exited
}

// bouncerProcess is one run of the pgbouncer binary.
type bouncerProcess struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
	// stopping says it is being stopped on purpose (Stop, or a start that
	// failed); exit is how it exited otherwise, set before done is closed.
	// Both are guarded by Bouncer.mu.
	stopping bool
	exit     error
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
	b := &Bouncer{
		dir:     dir,
		logPath: filepath.Join(dir, "pgbouncer.log"),
		ini:     filepath.Join(dir, "pgbouncer.ini"),
		path:    path,
		user:    c.user,
		mode:    cfg.PoolMode,
	}
	for attempt := 1; ; attempt++ {
		err = b.configure(c, cfg)
		if err == nil {
			err = b.run(ctx)
		}
		if err == nil {
			return b, nil
		}
		// A port picked as free may be taken before pgbouncer binds it.
		if attempt == 3 || !strings.Contains(err.Error(), "bind") {
			return nil, err
		}
	}
}

// configure picks a free port and writes pgbouncer's configuration for it.
func (b *Bouncer) configure(c *Cluster, cfg BouncerConfig) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("find a free port: %w", err)
	}
	b.port = ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return fmt.Errorf("find a free port: %w", err)
	}
	users := filepath.Join(b.dir, "userlist.txt")
	files := map[string]string{
		users: fmt.Sprintf("%q \"\"\n", superuser),
		b.ini: fmt.Sprintf(`; Written by herald pgcluster.StartBouncer.
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
	return nil
}

// run starts pgbouncer on its configuration and waits until it accepts
// connections.
func (b *Bouncer) run(ctx context.Context) error {
	logFile, err := os.OpenFile(b.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open pgbouncer log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(b.path, b.ini)
	cmd.Dir = b.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	b.user.apply(cmd)
	setBouncerDeathSignal(cmd)
	if err := startServerProcess(cmd); err != nil {
		return fmt.Errorf("start pgbouncer: %w", err)
	}
	p := &bouncerProcess{cmd: cmd, done: make(chan struct{})}
	go b.wait(p)
	b.mu.Lock()
	b.proc = p
	b.mu.Unlock()
	if err := b.waitReady(ctx, p.done); err != nil {
		stopErr := b.kill()
		logTail, _ := readTail(b.logPath)
		return fmt.Errorf("start pgbouncer: %w\nend of pgbouncer log %s:\n%s", errors.Join(err, stopErr), b.logPath, logTail)
	}
	return nil
}

// wait waits for p to exit and, unless it was stopped on purpose, records how:
// its exit status or signal and the end of its log, read now, before a
// Restart appends to it. A pgbouncer that dies under the tests is otherwise a
// mystery: its clients see only broken connections.
func (b *Bouncer) wait(p *bouncerProcess) {
	_ = p.cmd.Wait() // ProcessState says how it ended
	b.mu.Lock()
	if !p.stopping {
		logTail, err := readTail(b.logPath)
		if err != nil {
			logTail = []byte(err.Error())
		}
		p.exit = fmt.Errorf("pgbouncer (pid %d, port %d) exited: %v\nend of pgbouncer log %s:\n%s",
			p.cmd.Process.Pid, b.port, p.cmd.ProcessState, b.logPath, logTail)
	}
	b.mu.Unlock()
	close(p.done)
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

// Exits returns how many times pgbouncer has exited other than by Stop, and
// how it last did so (its exit status or signal, and the end of its log), or
// nil if it never has.
func (b *Bouncer) Exits() (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, last := b.exits, b.lastExit
	if b.proc != nil && b.proc.exit != nil {
		n, last = n+1, b.proc.exit
	}
	return n, last
}

// Restart starts pgbouncer again, on the same port and configuration, if it
// has exited (see Exits), and returns once it accepts connections. It does
// nothing while pgbouncer runs, and fails after Stop.
func (b *Bouncer) Restart(ctx context.Context) error {
	b.startMu.Lock()
	defer b.startMu.Unlock()
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return errors.New("restart pgbouncer: it is stopped")
	}
	if p := b.proc; p != nil { // nil: the last start failed before pgbouncer ran
		select {
		case <-p.done:
		default:
			b.mu.Unlock()
			return nil
		}
		if p.exit != nil {
			b.exits, b.lastExit = b.exits+1, p.exit
		}
		b.proc = nil
	}
	b.mu.Unlock()
	return b.run(ctx)
}

// Stop terminates pgbouncer (every connection through it breaks). It is
// idempotent.
func (b *Bouncer) Stop() error {
	b.startMu.Lock()
	defer b.startMu.Unlock()
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
	p := b.proc
	if p != nil {
		p.stopping = true
	}
	b.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := terminate(p.cmd.Process); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop pgbouncer: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("kill pgbouncer: %w", err)
		}
		<-p.done
	}
	return nil
}
