package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/fakefcm"
)

// `herald chaos-worker` is the process the sigkill scenario kills: Herald's
// relay and sender on the parent's database and fake FCM, configured by
// environment variables. It is hidden from the usage text.
const (
	// WorkerCommand is the hidden subcommand of a worker, which runs RunWorker.
	WorkerCommand = "chaos-worker"
	// chaosWorkerEnv is set to 1 in a worker's environment. A test binary's
	// TestMain runs the worker when it sees it.
	chaosWorkerEnv     = "HERALD_CHAOS_WORKER"
	chaosFCMURLEnv     = "HERALD_CHAOS_FCM_URL"
	chaosFCMProjectEnv = "HERALD_CHAOS_FCM_PROJECT"
	// chaosFCMCertEnv names a PEM file with the fake FCM's certificate.
	chaosFCMCertEnv = "HERALD_CHAOS_FCM_CERT"
	// chaosTuningEnv is the chaosTuning, as JSON.
	chaosTuningEnv = "HERALD_CHAOS_TUNING"
	// chaosClockOffsetEnv, when set, is a duration (time.ParseDuration) added
	// to every clock of the worker's Herald: chaosTuning.ClockOffset.
	chaosClockOffsetEnv = "HERALD_CHAOS_CLOCK_OFFSET"
	// chaosScenarioEnv names the scenario, for the worker's logs.
	chaosScenarioEnv = "HERALD_CHAOS_SCENARIO"
)

// RunWorker is `herald chaos-worker`: it runs Herald until ctx ends
// (SIGTERM), or exits at once when its standard input closes (the parent
// died).
func RunWorker(ctx context.Context, _ []string, _, stderr io.Writer) error {
	if os.Getenv(chaosWorkerEnv) != "1" {
		return errors.New("chaos-worker is started by `herald chaos`, not by hand")
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3) // the parent is gone: nobody will count or stop us
	}()
	var tuning chaosTuning
	if err := json.Unmarshal([]byte(os.Getenv(chaosTuningEnv)), &tuning); err != nil {
		return fmt.Errorf("read %s: %w", chaosTuningEnv, err)
	}
	if v := os.Getenv(chaosClockOffsetEnv); v != "" {
		offset, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("read %s: %w", chaosClockOffsetEnv, err)
		}
		tuning.ClockOffset = offset
	}
	cert, err := os.ReadFile(os.Getenv(chaosFCMCertEnv))
	if err != nil {
		return fmt.Errorf("read the fake fcm's certificate: %w", err)
	}
	fcm, err := chaosFCM(ctx, os.Getenv(chaosFCMURLEnv), os.Getenv(chaosFCMProjectEnv), cert)
	if err != nil {
		return err
	}
	cfg, err := pgxpool.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		return fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	cfg.MaxConns = 10
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	defer pool.Close()
	level := slog.LevelWarn
	if tuning.Verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).
		With("scenario", os.Getenv(chaosScenarioEnv), "worker_pid", os.Getpid())
	h, err := herald.New(pool, fcm, chaosRules(), tuning.heraldConfig(log))
	if err != nil {
		return err
	}
	return h.Run(ctx)
}

// chaosFCM builds an FCM client for the fake FCM at fcmURL, trusting only
// its certificate, as FakeFCM.ClientOptions does in process.
func chaosFCM(ctx context.Context, fcmURL, project string, certPEM []byte) (*herald.FCM, error) {
	opts, err := fakefcm.RemoteClientOptions(fcmURL, certPEM)
	if err != nil {
		return nil, err
	}
	fcm, err := herald.NewFCM(ctx, project, opts...)
	if err != nil {
		return nil, fmt.Errorf("fcm client: %w", err)
	}
	return fcm, nil
}

// chaosWorkers starts, kills and stops chaos-worker processes, one at a time.
type chaosWorkers struct {
	e    *chaosEnv
	exe  string
	args []string
	env  []string
	dir  string // holds the certificate file

	cur     *exec.Cmd
	stdin   io.WriteCloser
	exited  chan error // receives the current worker's exit
	started int
}

// newChaosWorkers prepares workers running this executable: `herald
// chaos-worker`, or the test binary, whose TestMain runs the worker.
func newChaosWorkers(e *chaosEnv, tuning chaosTuning) (*chaosWorkers, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this executable: %w", err)
	}
	cert := e.fake.CertPEM()
	dir, err := os.MkdirTemp("", "herald-chaos-")
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { _ = os.RemoveAll(dir) })
	certFile := filepath.Join(dir, "fake-fcm.pem")
	if err := os.WriteFile(certFile, cert, 0o600); err != nil {
		return nil, err
	}
	tuning.Verbose = e.opts.verbose
	tuningJSON, err := json.Marshal(tuning)
	if err != nil {
		return nil, err
	}
	w := &chaosWorkers{e: e, exe: exe, args: []string{WorkerCommand}, dir: dir}
	w.env = append(os.Environ(),
		chaosWorkerEnv+"=1",
		"DATABASE_URL="+e.poolURL(chaosAppWorker),
		chaosFCMURLEnv+"="+e.fake.URL(),
		chaosFCMProjectEnv+"="+e.fake.ProjectID(),
		chaosFCMCertEnv+"="+certFile,
		chaosTuningEnv+"="+string(tuningJSON),
		chaosScenarioEnv+"="+e.name,
	)
	if tuning.ClockOffset != 0 {
		w.env = append(w.env, chaosClockOffsetEnv+"="+tuning.ClockOffset.String())
	}
	e.closers = append(e.closers, func() { _ = w.kill() })
	return w, nil
}

// start starts a worker.
func (w *chaosWorkers) start() error {
	if w.cur != nil {
		return errors.New("a worker is already running")
	}
	cmd := exec.Command(w.exe, w.args...)
	cmd.Env = w.env
	cmd.Stdout = w.e.opts.stderr
	cmd.Stderr = w.e.opts.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start chaos worker: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	w.cur, w.stdin, w.exited = cmd, stdin, exited
	w.started++
	return nil
}

// pid returns the running worker's pid, or 0.
func (w *chaosWorkers) pid() int {
	if w.cur == nil {
		return 0
	}
	return w.cur.Process.Pid
}

// died reports whether the current worker exited on its own, and how.
func (w *chaosWorkers) died() (bool, error) {
	if w.cur == nil {
		return false, nil
	}
	select {
	case err := <-w.exited:
		w.cur = nil
		if err == nil {
			err = errors.New("exit status 0")
		}
		return true, err
	default:
		return false, nil
	}
}

// kill SIGKILLs the current worker and waits for it to be gone.
func (w *chaosWorkers) kill() error {
	if w.cur == nil {
		return nil
	}
	cmd := w.cur
	w.cur = nil
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-w.exited
	return nil
}

// stop asks the current worker to finish (SIGTERM: pushes in flight are
// completed and recorded) and waits, killing it after timeout.
func (w *chaosWorkers) stop(timeout time.Duration) error {
	if w.cur == nil {
		return nil
	}
	cmd := w.cur
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case err := <-w.exited:
		w.cur = nil
		if err != nil {
			return fmt.Errorf("chaos worker: %w", err)
		}
		return nil
	case <-time.After(timeout):
		w.cur = nil
		_ = cmd.Process.Kill()
		<-w.exited
		return fmt.Errorf("chaos worker did not stop within %s of SIGTERM", timeout)
	}
}
