package fleettest_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/api/option"

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
	// workerSendsEnv names a directory where each worker writes, one line
	// each, the time (Unix nanoseconds) every request to FCM left it.
	workerSendsEnv = "HERALD_FLEETTEST_SENDS"
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
	sends := newSendLog(filepath.Join(os.Getenv(workerSendsEnv), fmt.Sprintf("worker-%d.txt", os.Getpid())))
	defer sends.close()
	client, err := stampingClient(cert, sends)
	if err != nil {
		return err
	}
	fcm, err := herald.NewFCM(ctx, os.Getenv(workerFCMProj),
		option.WithEndpoint(os.Getenv(workerFCMURLEnv)+"/v1"), option.WithHTTPClient(client))
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

// stampingClient is an HTTP client to the fake FCM (trusting only its
// certificate, over HTTP/2) that logs when each request leaves: what
// Herald's rate limit governs, before any delay the loaded machine adds on
// the way to the fake.
func stampingClient(certPEM []byte, sends *sendLog) (*http.Client, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(certPEM) {
		return nil, errors.New("the fake fcm's certificate is not PEM")
	}
	base := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
	}
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, ":send") {
			sends.add(time.Now())
		}
		return base.RoundTrip(r)
	})}, nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// sendLog writes send times to a file from one goroutine.
type sendLog struct {
	times chan time.Time
	done  chan struct{}
}

func newSendLog(path string) *sendLog {
	l := &sendLog{times: make(chan time.Time, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		f, err := os.Create(path)
		if err != nil {
			for range l.times {
			}
			return
		}
		defer f.Close()
		w := bufio.NewWriter(f)
		defer w.Flush()
		for at := range l.times {
			fmt.Fprintln(w, at.UnixNano())
		}
	}()
	return l
}

func (l *sendLog) add(at time.Time) { l.times <- at }

func (l *sendLog) close() {
	close(l.times)
	<-l.done
}

// readSends returns every send time the workers logged in dir, sorted.
func readSends(t *testing.T, dir string) []time.Time {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "worker-*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var out []time.Time
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Fields(string(raw)) {
			ns, err := strconv.ParseInt(line, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, time.Unix(0, ns))
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// worker is one Herald process started by a test.
type worker struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit, once done is closed
}

// fleet starts and stops workers on one database and fake FCM.
type fleet struct {
	t     *testing.T
	env   []string
	sends string // the directory of the workers' send logs
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
	sends := t.TempDir()
	return &fleet{t: t, sends: sends, env: append(os.Environ(),
		workerSendsEnv+"="+sends,
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
