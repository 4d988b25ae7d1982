package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
)

// One Herald process of `herald bench replicas`. The bench re-executes its
// own binary (a test binary too) as `herald bench-herald` with
// benchHeraldEnv set; cmd/herald's main, or the test binary's TestMain, then
// runs RunHerald. The child runs Herald (relay, sender, expander,
// housekeeping) on DATABASE_URL against the bench's fake FCM until its
// standard input closes, then finishes the pushes in flight and exits. It
// prints two JSON lines on stdout: benchHeraldReady just before Run, and its
// benchHeraldReport at the end. It never outlives the bench.

// benchHeraldEnv, set to "1", makes the binary run as a bench Herald process.
const benchHeraldEnv = "HERALD_BENCH_HERALD"

// HeraldCommand is the hidden subcommand of the child, which runs RunHerald.
const HeraldCommand = "bench-herald"

// The fake FCM's address, project and certificate (PEM), for the child.
const (
	benchFCMURLEnv     = "HERALD_BENCH_FCM_URL"
	benchFCMProjectEnv = "HERALD_BENCH_FCM_PROJECT"
	benchFCMCertEnv    = "HERALD_BENCH_FCM_CERT"
)

// benchHeraldReady is the child's first line: Herald is made and about to run.
type benchHeraldReady struct {
	Ready bool `json:"ready"`
}

// benchHeraldReport is what a child says when it stops: its own counters.
type benchHeraldReport struct {
	PID              int   `json:"pid"`
	Claimed          int64 `json:"claimed"`
	Sent             int64 `json:"sent"`
	Released         int64 `json:"released"`
	RelayEvents      int64 `json:"relay_events"`
	RelayDeliveries  int64 `json:"relay_deliveries"`
	RunMilliseconds  int64 `json:"run_ms"`
	QuotaPauses      int64 `json:"quota_pauses"`
	RetriesScheduled int64 `json:"retries_scheduled"`
	QuotaExceeded    int64 `json:"quota_exceeded"`
	CircuitOpen      int64 `json:"circuit_open"`
	// InFlightLimit is the sender's limit at the end, PeakInFlightLimit
	// the largest seen, and Limits the limit every half second of the run.
	InFlightLimit     int64   `json:"in_flight_limit"`
	PeakInFlightLimit int64   `json:"peak_in_flight_limit"`
	Limits            []int64 `json:"limits"`
	// The Go runtime's peaks, sampled every 200 ms: heap in use, goroutine
	// stacks in use, memory obtained from the OS, and goroutines.
	PeakHeapInuse  uint64 `json:"peak_heap_inuse"`
	PeakStackInuse uint64 `json:"peak_stack_inuse"`
	PeakSys        uint64 `json:"peak_sys"`
	PeakGoroutines int    `json:"peak_goroutines"`
	// PeakRSSAnon and PeakRSSFile split the resident set (sampled every
	// 200 ms): anonymous memory (heap, stacks, runtime) and file-backed
	// pages (the binary's code and data as it gets touched).
	PeakRSSAnon int64 `json:"peak_rss_anon"`
	PeakRSSFile int64 `json:"peak_rss_file"`
	// PeakRSS is the process's own peak resident set (VmHWM) at the end.
	// Its rusage's maxrss is no good: Go starts a child with vfork and
	// exec, and Linux keeps in a child's maxrss the peak of the memory it
	// ran in before exec, the parent's.
	PeakRSS int64 `json:"peak_rss"`
}

// RunHerald is the child: Herald with the bench's configuration and rules
// until stdin closes.
func RunHerald(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if os.Getenv(benchHeraldEnv) != "1" {
		return errors.New(HeraldCommand + " is started by `herald bench replicas`, not by hand")
	}
	fs := flag.NewFlagSet(HeraldCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	inFlight := fs.Int("inflight", 128, "Sender.MaxInFlight (0: adaptive)")
	rateLimit := fs.Int("rate-limit", 0, "Sender.RatePerMinute (0: Herald's default)")
	verbose := fs.Bool("v", false, "log at info level")
	if err := fs.Parse(args); err != nil {
		return cli.UsageError{Msg: err.Error()}
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop() // the bench is done, or gone
	}()
	opts, err := fakefcm.RemoteClientOptions(os.Getenv(benchFCMURLEnv), []byte(os.Getenv(benchFCMCertEnv)))
	if err != nil {
		return err
	}
	fcm, err := herald.NewFCM(ctx, os.Getenv(benchFCMProjectEnv), opts...)
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
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("bench_pid", os.Getpid())
	h, err := herald.New(pool, fcm, benchRules(benchCampaignRule), herald.Config{
		Logger: log,
		Sender: herald.SenderConfig{MaxInFlight: *inFlight, RatePerMinute: *rateLimit},
	})
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(benchHeraldReady{Ready: true}); err != nil {
		return err
	}
	// HERALD_BENCH_CPU_PROFILE names a file each child writes its CPU
	// profile to, with its pid appended.
	if path := os.Getenv("HERALD_BENCH_CPU_PROFILE"); path != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	began := time.Now()
	sampled := make(chan []int64, 1)
	var peak atomic.Int64
	var mem benchHeraldReport // its runtime peaks, written by the sampler only
	go func() {
		var limits []int64
		next := time.Now()
		nextMem := time.Now()
		var ms runtime.MemStats
		for ctx.Err() == nil {
			l := h.Stats().Sender.InFlightLimit
			peak.Store(max(peak.Load(), l))
			if time.Now().After(next) {
				limits = append(limits, l)
				next = next.Add(500 * time.Millisecond)
			}
			if time.Now().After(nextMem) {
				runtime.ReadMemStats(&ms)
				if path := os.Getenv("HERALD_BENCH_HEAP_PROFILE"); path != "" && ms.HeapInuse > mem.PeakHeapInuse*11/10 {
					if f, err := os.Create(path); err == nil {
						_ = pprof.WriteHeapProfile(f)
						_ = f.Close()
					}
				}
				mem.PeakHeapInuse, mem.PeakStackInuse = max(mem.PeakHeapInuse, ms.HeapInuse), max(mem.PeakStackInuse, ms.StackInuse)
				mem.PeakSys, mem.PeakGoroutines = max(mem.PeakSys, ms.Sys), max(mem.PeakGoroutines, runtime.NumGoroutine())
				anon, file := benchSelfRSS()
				mem.PeakRSSAnon, mem.PeakRSSFile = max(mem.PeakRSSAnon, anon), max(mem.PeakRSSFile, file)
				nextMem = nextMem.Add(200 * time.Millisecond)
			}
			cli.Sleep(ctx, 10*time.Millisecond)
		}
		sampled <- limits
	}()
	if err := h.Run(ctx); err != nil {
		return err
	}
	limits := <-sampled
	hwm, _ := benchPeakRSS()
	s := h.Stats()
	return enc.Encode(benchHeraldReport{
		PID: os.Getpid(), Claimed: s.Sender.Claimed, Sent: s.Sender.Sent, Released: s.Sender.Released,
		RelayEvents: s.Relay.Events, RelayDeliveries: s.Relay.Deliveries, RunMilliseconds: time.Since(began).Milliseconds(),
		QuotaPauses: s.Sender.QuotaPauses, RetriesScheduled: s.Sender.RetriesScheduled,
		QuotaExceeded: s.Sender.QuotaExceeded, CircuitOpen: s.Sender.CircuitOpen,
		InFlightLimit: s.Sender.InFlightLimit, PeakInFlightLimit: peak.Load(), Limits: limits,
		PeakHeapInuse: mem.PeakHeapInuse, PeakStackInuse: mem.PeakStackInuse, PeakSys: mem.PeakSys, PeakGoroutines: mem.PeakGoroutines,
		PeakRSSAnon: mem.PeakRSSAnon, PeakRSSFile: mem.PeakRSSFile, PeakRSS: hwm,
	})
}

// benchHeraldProcess is the parent's end of one child.
type benchHeraldProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	ready  chan error // receives once: nil when the child said it is ready
	report chan []byte
	exited chan error
}

// startBenchHerald starts one Herald process on dbURL against the fake,
// with -inflight and -rate-limit.
func (b *bench) startBenchHerald(dbURL string) (*benchHeraldProcess, error) {
	return b.startBenchHeraldWith(dbURL, b.opts.inFlight, b.opts.rateLimit)
}

// startBenchHeraldWith starts one Herald process on dbURL against the fake
// with Sender.MaxInFlight inFlight (0: adaptive) and Sender.RatePerMinute
// rateLimit (0: Herald's default).
func (b *bench) startBenchHeraldWith(dbURL string, inFlight, rateLimit int) (*benchHeraldProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable for a herald process: %w", err)
	}
	project, url, cert, err := b.fake.endpoint()
	if err != nil {
		return nil, err
	}
	args := []string{HeraldCommand, "-inflight", strconv.Itoa(inFlight), "-rate-limit", strconv.Itoa(rateLimit)}
	if b.opts.verbose {
		args = append(args, "-v")
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), benchHeraldEnv+"=1", "DATABASE_URL="+dbURL,
		benchFCMURLEnv+"="+url, benchFCMProjectEnv+"="+project, benchFCMCertEnv+"="+cert)
	p := &benchHeraldProcess{cmd: cmd, ready: make(chan error, 1), report: make(chan []byte, 1), exited: make(chan error, 1)}
	cmd.Stderr = b.stderr
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start herald process: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		var ready benchHeraldReady
		if !sc.Scan() || json.Unmarshal(sc.Bytes(), &ready) != nil || !ready.Ready {
			p.ready <- errors.New("herald process did not say it was ready")
			p.report <- nil
			_, _ = io.Copy(io.Discard, stdout)
			return
		}
		p.ready <- nil
		var last []byte
		for sc.Scan() {
			last = bytes.Clone(sc.Bytes())
		}
		p.report <- last
	}()
	go func() {
		r := <-p.report // Wait closes stdout: read it all first
		p.report <- r
		p.exited <- cmd.Wait()
	}()
	return p, nil
}

// waitReady waits until the child is about to run Herald.
func (p *benchHeraldProcess) waitReady(ctx context.Context) error {
	select {
	case err := <-p.ready:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return errors.New("herald process not ready within a minute")
	}
}

// stop closes the child's stdin, waits for it to finish its pushes and
// report (killing it after 30 s), and returns its report and the CPU time
// it used in all (user and system, from its rusage).
func (p *benchHeraldProcess) stop() (benchHeraldReport, time.Duration, error) {
	_ = p.stdin.Close()
	var err error
	select {
	case err = <-p.exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		err = errors.New("did not stop within 30s")
	}
	var cpu time.Duration
	if st := p.cmd.ProcessState; st != nil {
		cpu = st.UserTime() + st.SystemTime()
	}
	var r benchHeraldReport
	if err != nil {
		return r, cpu, fmt.Errorf("herald process %d: %w", p.cmd.Process.Pid, err)
	}
	if jerr := json.Unmarshal(<-p.report, &r); jerr != nil {
		return r, cpu, fmt.Errorf("herald process %d: report: %w", p.cmd.Process.Pid, jerr)
	}
	return r, cpu, nil
}
