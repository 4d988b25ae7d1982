package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Config configures Start. The zero value is valid and means the documented
// defaults.
type Config struct {
	// Dir is the directory in which the cluster makes its own directory (data directory, server
	// log, owner file). Start first removes the clusters that processes which have since
	// died left in Dir. When the test binary runs as root, Postgres runs as the postgres system
	// user (or nobody), so Dir and all its parents must be traversable by that user:
	// t.TempDir() is not (it is mode 0700). Defaults to os.TempDir()/herald-pg-<euid>.
	Dir string
	// Port is the TCP port the server listens on at 127.0.0.1. Defaults to a free port.
	Port int
	// BinDir is the directory holding initdb and postgres. Defaults to the directory
	// of the initdb found in PATH (symbolic links resolved), else the highest version of
	// /usr/lib/postgresql/*/bin.
	BinDir string
	// Settings are extra server parameters (postgresql.conf names and values), written after
	// the defaults and so overriding them. The defaults favour speed over durability:
	// fsync, synchronous_commit and full_page_writes off, max_connections 300,
	// shared_buffers 128MB, no Unix socket.
	Settings map[string]string
	// StartTimeout bounds how long Start and Restart wait for the server to accept
	// connections, on top of any deadline of their context. Defaults to 60s.
	StartTimeout time.Duration
}

// Cluster is a throwaway Postgres cluster for tests: its own data directory under
// Config.Dir, a server listening on 127.0.0.1 on its own port, trust authentication for
// the superuser postgres, UTF8 and locale C, no Unix socket in shared directories, and the
// server log in a file in the data directory (see LogPath), not on the test's output.
//
// On Linux the server is shut down (immediately) if the process that started it dies, and on
// every system Start removes clusters whose owning process is gone, so a killed test
// binary does not leave a server behind for long.
//
// A Cluster's methods are safe for concurrent use.
type Cluster struct {
	dir          string // ours alone: owner file and data directory
	dataDir      string
	logPath      string
	binDir       string
	port         int
	user         *serverUser
	startTimeout time.Duration

	mu      sync.Mutex // serialises Restart and Stop
	server  *serverProcess
	stopped bool
}

// serverProcess is one run of the postmaster.
type serverProcess struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// Default values of Config.
const (
	defaultStartTimeout = 60 * time.Second
	// stopTimeout bounds a fast shutdown before the server is killed.
	stopTimeout = 30 * time.Second
	// superuser is the role initdb creates; the cluster trusts it from 127.0.0.1.
	superuser = "postgres"
	// clusterDirPrefix names the directories Start makes, and reaps, in
	// Config.Dir.
	clusterDirPrefix = "cluster-"
	logFileName      = "postgres.log"
)

// defaultSettings make the server fast and quiet for tests; Config.Settings override them.
var defaultSettings = map[string]string{
	"listen_addresses":        "127.0.0.1",
	"unix_socket_directories": "",
	"fsync":                   "off",
	"synchronous_commit":      "off",
	"full_page_writes":        "off",
	"max_connections":         "300",
	"shared_buffers":          "128MB",
}

// Start creates a Postgres cluster with initdb (trust authentication, UTF8, locale C)
// and starts its server. It returns once the server accepts connections; its errors include
// the end of the server log. The caller must call Stop, which also deletes the cluster's
// files; in tests, register it with t.Cleanup. Most tests want testutil.NewDatabase instead, which
// shares one cluster across the test binary.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if errNoCluster != nil {
		return nil, errNoCluster
	}
	binDir, err := findBinDir(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	u, err := lookupServerUser()
	if err != nil {
		return nil, err
	}
	root := cfg.Dir
	if root == "" {
		root = filepath.Join(os.TempDir(), fmt.Sprintf("herald-pg-%d", os.Geteuid()))
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, fmt.Errorf("create cluster directory: %w", err)
		}
		// Traversable by the server user even under a strict umask.
		if err := os.Chmod(root, 0o755); err != nil {
			return nil, fmt.Errorf("create cluster directory: %w", err)
		}
	}
	// Absolute, so that reapers in other working directories recognise our server.
	if root, err = filepath.Abs(root); err != nil {
		return nil, fmt.Errorf("cluster directory: %w", err)
	}
	if err := u.checkTraversable(root); err != nil {
		return nil, err
	}
	reapStaleClusters(root)

	dir, err := os.MkdirTemp(root, clusterDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c := &Cluster{
		dir:          dir,
		dataDir:      filepath.Join(dir, "data"),
		binDir:       binDir,
		port:         cfg.Port,
		user:         u,
		startTimeout: cfg.StartTimeout,
	}
	c.logPath = filepath.Join(c.dataDir, logFileName)
	if c.startTimeout <= 0 {
		c.startTimeout = defaultStartTimeout
	}
	if err := c.create(ctx, cfg.Settings); err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	// A port picked as free may be taken before the server binds it: pick another.
	for attempt := 1; ; attempt++ {
		err = c.start(ctx)
		if err == nil {
			return c, nil
		}
		if cfg.Port != 0 || attempt == 3 || !strings.Contains(err.Error(), "could not bind") {
			return nil, errors.Join(err, os.RemoveAll(dir))
		}
		if err := c.pickPort(cfg.Settings); err != nil {
			return nil, errors.Join(err, os.RemoveAll(dir))
		}
	}
}

// create makes the cluster directory usable by the server user, runs initdb and writes the
// settings.
func (c *Cluster) create(ctx context.Context, settings map[string]string) error {
	if err := writeOwner(c.dir); err != nil {
		return err
	}
	if c.user != nil {
		// Root's directory: the server user may pass through, not list or write.
		if err := os.Chmod(c.dir, 0o711); err != nil {
			return fmt.Errorf("create cluster directory: %w", err)
		}
	}
	if err := os.Mkdir(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := c.user.chown(c.dataDir); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}

	initdb := exec.CommandContext(ctx, filepath.Join(c.binDir, "initdb"),
		"--pgdata="+c.dataDir, "--username="+superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.Dir = c.dir // the test's working directory may be closed to the server user
	c.user.apply(initdb)
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, tail(out))
	}
	if c.port == 0 {
		return c.pickPort(settings)
	}
	return c.writeSettings(settings)
}

// pickPort chooses a free port and writes the settings with it.
func (c *Cluster) pickPort(settings map[string]string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("find a free port: %w", err)
	}
	c.port = ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return fmt.Errorf("find a free port: %w", err)
	}
	return c.writeSettings(settings)
}

// writeSettings writes the server settings to postgresql.auto.conf, which the server reads
// last, so that the cluster can also be started by hand with pg_ctl when debugging.
func (c *Cluster) writeSettings(extra map[string]string) error {
	settings := maps.Clone(defaultSettings)
	maps.Copy(settings, extra)
	settings["port"] = strconv.Itoa(c.port)
	var b strings.Builder
	b.WriteString("# Written by herald pgcluster.Start.\n")
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = '%s'\n", name, strings.ReplaceAll(settings[name], "'", "''"))
	}
	path := filepath.Join(c.dataDir, "postgresql.auto.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write server settings: %w", err)
	}
	if err := c.user.chown(path); err != nil {
		return fmt.Errorf("write server settings: %w", err)
	}
	return nil
}

// start runs the postmaster and waits until it accepts connections. c.mu is held or c is not
// shared yet.
func (c *Cluster) start(ctx context.Context) error {
	logFile, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	defer logFile.Close() // the server has its own descriptor
	if err := c.user.chown(c.logPath); err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), "-D", c.dataDir)
	cmd.Dir = c.dataDir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	c.user.apply(cmd)
	if err := startServerProcess(cmd); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	server := &serverProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the exit status says nothing the log does not
		close(server.done)
	}()
	c.server = server

	if err := c.waitReady(ctx, server); err != nil {
		stopErr := c.stopServer(true)
		return c.serverError("start postgres", errors.Join(err, stopErr))
	}
	return nil
}

// waitReady polls until the server accepts a connection, the server exits, or the time is up.
func (c *Cluster) waitReady(ctx context.Context, server *serverProcess) error {
	ctx, cancel := context.WithTimeout(ctx, c.startTimeout)
	defer cancel()
	url := c.URL("postgres")
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.Connect(attemptCtx, url)
		cancelAttempt()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-server.done:
			return errors.New("server exited")
		case <-ctx.Done():
			return fmt.Errorf("server not accepting connections: %w", errors.Join(ctx.Err(), err))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stopServer shuts the running server down and waits for it to exit; a fast shutdown that
// takes longer than stopTimeout becomes a kill. c.mu is held or c is not shared yet.
func (c *Cluster) stopServer(immediate bool) error {
	server := c.server
	if server == nil {
		return nil
	}
	select {
	case <-server.done:
		c.server = nil
		return nil
	default:
	}
	if err := signalServer(server.cmd.Process, immediate); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop postgres: %w", err)
	}
	select {
	case <-server.done:
	case <-time.After(stopTimeout):
		if err := server.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("kill postgres: %w", err)
		}
		<-server.done
	}
	c.server = nil
	return nil
}

// URL returns the connection URL of database dbname on this cluster, as the superuser:
// postgres://postgres@127.0.0.1:port/dbname?sslmode=disable. The database postgres always
// exists.
func (c *Cluster) URL(dbname string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, c.port, dbname)
}

// Port returns the TCP port the server listens on at 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// LogPath returns the server's log file, in the data directory. It is removed by Stop.
func (c *Cluster) LogPath() string { return c.logPath }

// Restart stops the server and starts it again on the same port and data, returning once it
// accepts connections. With immediate, it is Postgres' immediate shutdown (pg_ctl -m
// immediate: backends die at once, as in a crash, and the next start runs crash recovery);
// otherwise a fast shutdown (sessions are terminated, then a checkpoint). Either way every
// client connection dies: a pgxpool finds out only when it next uses a connection, and it
// pings before use only connections idle for over a second unless its Config.ShouldPing says
// otherwise.
func (c *Cluster) Restart(ctx context.Context, immediate bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("restart postgres: cluster is stopped")
	}
	if err := c.stopServer(immediate); err != nil {
		return c.serverError("restart postgres", err)
	}
	return c.start(ctx)
}

// Stop shuts the server down (fast shutdown) and deletes the cluster's files. It is idempotent
// and safe to call concurrently, from t.Cleanup and from testutil.Main alike; only the first call does
// anything.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	err := c.stopServer(false)
	if rmErr := os.RemoveAll(c.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove cluster directory: %w", rmErr))
	}
	return err
}

// serverError wraps err with the end of the server log.
func (c *Cluster) serverError(op string, err error) error {
	logTail, readErr := readTail(c.logPath)
	if readErr != nil {
		logTail = []byte(readErr.Error())
	}
	return &serverError{op: op, logPath: c.logPath, logTail: string(logTail), err: err}
}

// serverError is a failure of a cluster's server, with the last lines of its log: the server
// usually says why it failed there and nowhere else.
type serverError struct {
	op      string
	logPath string
	logTail string
	err     error
}

func (e *serverError) Error() string {
	return fmt.Sprintf("%s: %v\nend of server log %s:\n%s", e.op, e.err, e.logPath, e.logTail)
}

func (e *serverError) Unwrap() error { return e.err }

// findBinDir returns the directory holding the server binaries: configured if set, else the
// directory of initdb in PATH, else the highest version of /usr/lib/postgresql/*/bin.
func findBinDir(configured string) (string, error) {
	if configured != "" {
		if err := hasServerBinaries(configured); err != nil {
			return "", fmt.Errorf("postgres binaries: %w", err)
		}
		return configured, nil
	}
	var candidates []string
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if resolved, err := filepath.EvalSymlinks(initdb); err == nil {
			initdb = resolved
		}
		candidates = append(candidates, filepath.Dir(initdb))
	}
	versioned, _ := filepath.Glob("/usr/lib/postgresql/*/bin") // only ErrBadPattern
	slices.SortFunc(versioned, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	candidates = append(candidates, versioned...)
	for _, dir := range candidates {
		if hasServerBinaries(dir) == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no postgres server binaries (initdb and postgres) in PATH or " +
		"/usr/lib/postgresql/*/bin: install PostgreSQL, set Config.BinDir, or set " + testDatabaseURLEnv)
}

// hasServerBinaries reports which of the binaries Start runs dir lacks.
func hasServerBinaries(dir string) error {
	var errs []error
	for _, name := range []string{"initdb", "postgres"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err == nil && (info.IsDir() || info.Mode()&0o111 == 0) {
			err = fmt.Errorf("%s is not an executable file", filepath.Join(dir, name))
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// compareVersions orders dotted version numbers like "9.6" and "15" numerically.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// readTail returns the last lines of a file.
func readTail(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	const maxTail = 4096
	offset := max(info.Size()-maxTail, 0)
	buf := make([]byte, info.Size()-offset)
	if _, err := f.ReadAt(buf, offset); err != nil {
		return nil, err
	}
	return tail(buf), nil
}

// tail returns the last 20 lines of out.
func tail(out []byte) []byte {
	lines := strings.SplitAfter(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return []byte(strings.Join(lines, ""))
}
