package fleettest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// The environment of a worker: a Herald process started by a test.
const (
	workerEnv       = "HERALD_FLEETTEST_WORKER" // "1" in a worker
	workerFCMURLEnv = "HERALD_FLEETTEST_FCM_URL"
	workerFCMCert   = "HERALD_FLEETTEST_FCM_CERT" // a PEM file
	workerFCMProj   = "HERALD_FLEETTEST_FCM_PROJECT"
	workerTuningEnv = "HERALD_FLEETTEST_TUNING" // a workerTuning as JSON
)

// workerTuning is what a test sets in its workers' configuration.
type workerTuning struct {
	RatePerMinute     int           `json:"rate_per_minute"`
	MaxInFlight       int           `json:"max_in_flight"`
	BatchSize         int           `json:"batch_size"`
	Lease             time.Duration `json:"lease"`
	QuotaDevices      int           `json:"quota_devices"`
	HeartbeatInterval time.Duration `json:"heartbeat_interval"`
	DeadAfter         time.Duration `json:"dead_after"`
}

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := runWorker(); err != nil {
			fmt.Fprintln(os.Stderr, "fleettest worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(testutil.Main(m))
}

// runWorker runs one Herald until SIGTERM, or exits at once when its
// standard input closes (the test is gone).
func runWorker() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
	var tuning workerTuning
	if err := json.Unmarshal([]byte(os.Getenv(workerTuningEnv)), &tuning); err != nil {
		return err
	}
	cert, err := os.ReadFile(os.Getenv(workerFCMCert))
	if err != nil {
		return err
	}
	opts, err := fakefcm.RemoteClientOptions(os.Getenv(workerFCMURLEnv), cert)
	if err != nil {
		return err
	}
	fcm, err := herald.NewFCM(ctx, os.Getenv(workerFCMProj), opts...)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer pool.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).
		With("worker_pid", os.Getpid())
	h, err := herald.New(pool, fcm, notification.NewRules(), herald.Config{
		Logger: log,
		Sender: herald.SenderConfig{
			RatePerMinute: tuning.RatePerMinute, MaxInFlight: tuning.MaxInFlight, BatchSize: tuning.BatchSize,
			Lease: tuning.Lease, QuotaDevices: tuning.QuotaDevices, PollInterval: 50 * time.Millisecond,
			Retry: notification.RetryPolicy{MaxAttempts: 20, BaseDelay: 200 * time.Millisecond, MaxDelay: time.Second},
		},
		FCM:   herald.FCMConfig{SendTimeout: 3 * time.Second},
		Fleet: herald.FleetConfig{HeartbeatInterval: tuning.HeartbeatInterval, DeadAfter: tuning.DeadAfter},
	})
	if err != nil {
		return err
	}
	return h.Run(ctx)
}

// worker is one Herald process started by a test.
type worker struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit, once done is closed
}

// fleet starts and stops workers on one database and fake FCM.
type fleet struct {
	t   *testing.T
	env []string
}

func newFleet(t *testing.T, databaseURL string, fake *fakefcm.Server, tuning workerTuning) *fleet {
	t.Helper()
	certFile := filepath.Join(t.TempDir(), "fake-fcm.pem")
	if err := os.WriteFile(certFile, fake.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(tuning)
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{t: t, env: append(os.Environ(),
		workerEnv+"=1",
		"DATABASE_URL="+databaseURL,
		workerFCMURLEnv+"="+fake.URL(),
		workerFCMCert+"="+certFile,
		workerFCMProj+"="+fake.ProjectID(),
		workerTuningEnv+"="+string(raw),
	)}
}

// start starts a worker; it is killed when the test ends if still running.
func (f *fleet) start() *worker {
	f.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		f.t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = f.env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	w := &worker{cmd: cmd, done: make(chan struct{})}
	go func() {
		w.err = cmd.Wait()
		_ = stdin.Close()
		close(w.done)
	}()
	f.t.Cleanup(w.kill)
	return w
}

func (w *worker) pid() int { return w.cmd.Process.Pid }

// kill SIGKILLs the worker and waits until it is gone.
func (w *worker) kill() {
	_ = w.cmd.Process.Kill()
	<-w.done
}

// stop asks the worker to finish (SIGTERM) and waits, killing it after 20s.
func (w *worker) stop(t *testing.T) {
	t.Helper()
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
		if w.err != nil {
			t.Errorf("worker %d: %v", w.pid(), w.err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("worker %d did not stop within 20s of SIGTERM", w.pid())
		w.kill()
	}
}
