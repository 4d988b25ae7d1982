package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"google.golang.org/api/option"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
)

// benchFake is the fake FCM a bench sends to, with the accounting of what it
// accepted. It runs in a child process by default, so that its memory is
// not Herald's; or in this process (-fake inprocess).
type benchFake interface {
	// clientOptions returns the fake's project and the client options that
	// point an FCM client at it, like fakefcm.Server.ClientOptions, on a
	// connection pool of its own (so each phase's connections are counted
	// alone).
	clientOptions() (project string, opts []option.ClientOption, err error)
	// endpoint is what a Herald in another process needs to reach the
	// fake: its project, URL and certificate (PEM).
	endpoint() (project, url, certPEM string, err error)
	// reset starts a phase expecting one message to each of the tokens with
	// keys 0..n-1, and zeroes the fake's request and connection counters.
	reset(n int) error
	progress() (benchProgress, error)
	stats() (benchFakeStats, error)
	latency(segments []benchCommitSegment) (benchLatency, error)
	// configure sets the fake's latency, and makes it answer 503 to one
	// request in failEvery (none when failEvery is 0).
	configure(latency time.Duration, failEvery int) error
	// mode is "process" or "in-process".
	mode() string
	close() error
}

// benchFakeStats is a phase's account, with the fake's own counters.
type benchFakeStats struct {
	Tally       benchTallyStats `json:"tally"`
	Connections int64           `json:"connections"`
	Requests    int64           `json:"requests"`
	// CPUSeconds is the CPU time the fake's process used so far (0 when the
	// fake runs in Herald's process).
	CPUSeconds float64 `json:"cpu_seconds"`
}

// startBenchFake starts the fake FCM in a child process, or in this one.
func startBenchFake(ctx context.Context, inProcess bool, latency time.Duration, stderr io.Writer) (benchFake, error) {
	if inProcess {
		if f, err := startBenchFakeInProcess(latency); err == nil {
			return f, nil
		} else {
			return nil, err
		}
	}
	f, err := startBenchFakeProcess(ctx, latency, stderr)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// benchInProcessFake runs fakefcm.Server in this process.
type benchInProcessFake struct {
	fake  *fakefcm.Server
	tally *benchTally
}

func startBenchFakeInProcess(latency time.Duration) (*benchInProcessFake, error) {
	tally := &benchTally{}
	tally.reset(0)
	fake, err := fakefcm.Start(fakefcm.Config{Latency: latency, DontRecord: true, OnAccept: tally.observe})
	if err != nil {
		return nil, fmt.Errorf("start fake fcm: %w", err)
	}
	return &benchInProcessFake{fake: fake, tally: tally}, nil
}

func (f *benchInProcessFake) clientOptions() (string, []option.ClientOption, error) {
	opts, err := fakefcm.RemoteClientOptions(f.fake.URL(), f.fake.CertPEM())
	return f.fake.ProjectID(), opts, err
}

func (f *benchInProcessFake) endpoint() (string, string, string, error) {
	return f.fake.ProjectID(), f.fake.URL(), string(f.fake.CertPEM()), nil
}

func (f *benchInProcessFake) reset(n int) error {
	f.tally.reset(n)
	f.fake.ResetRecorded()
	return nil
}

func (f *benchInProcessFake) progress() (benchProgress, error) { return f.tally.progress(), nil }

func (f *benchInProcessFake) stats() (benchFakeStats, error) {
	return benchFakeStats{Tally: f.tally.stats(), Connections: f.fake.Connections(), Requests: f.fake.Requests()}, nil
}

func (f *benchInProcessFake) latency(segments []benchCommitSegment) (benchLatency, error) {
	return f.tally.latency(segments), nil
}

func (f *benchInProcessFake) configure(latency time.Duration, failEvery int) error {
	configureFake(f.fake, latency, failEvery)
	return nil
}

// configureFake sets fake's latency and its share of 503s.
func configureFake(fake *fakefcm.Server, latency time.Duration, failEvery int) {
	fake.SetLatency(latency)
	fake.ClearFaults()
	if failEvery > 0 {
		fake.FailAll(fakefcm.Fault{Code: fakefcm.FaultUnavailable, Every: failEvery})
	}
}

func (f *benchInProcessFake) mode() string { return "in-process" }

func (f *benchInProcessFake) close() error {
	f.fake.Close()
	return nil
}

// The child process. `herald bench` re-executes its own binary (a test
// binary too) as `herald bench-fake-fcm` with benchFakeEnv set; cmd/herald's
// main, or the test binary's TestMain, then runs RunFakeFCM. The child speaks JSON values on its stdin and stdout: first a
// benchFakeHello, then one benchFakeResponse per benchFakeRequest. It exits when its stdin
// closes, so it never outlives the bench.

// benchFakeEnv, set to "1", makes the binary run as the bench's fake FCM.
const benchFakeEnv = "HERALD_BENCH_FAKE_FCM"

// FakeFCMCommand is the hidden subcommand of the child, which runs RunFakeFCM.
const FakeFCMCommand = "bench-fake-fcm"

type benchFakeHello struct {
	URL     string `json:"url"`
	Project string `json:"project"`
	// CertPEM is the fake's self-signed certificate, for the parent to trust.
	CertPEM string `json:"cert_pem"`
}

type benchFakeRequest struct {
	Op string `json:"op"` // reset, progress, stats, latency, configure
	N  int    `json:"n,omitempty"`
	// LatencyNanos and FailEvery: configure's arguments.
	LatencyNanos int64                `json:"latency_ns,omitempty"`
	FailEvery    int                  `json:"fail_every,omitempty"`
	Segments     []benchCommitSegment `json:"segments,omitempty"`
}

type benchFakeResponse struct {
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// RunFakeFCM is the child: a fakefcm.Server that keeps no messages,
// only an benchTally, answering requests on stdin until stdin closes.
func RunFakeFCM(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(FakeFCMCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	latency := fs.Duration("latency", 20*time.Millisecond, "latency added to every request")
	if err := fs.Parse(args); err != nil {
		return cli.UsageError{Msg: err.Error()}
	}
	tally := &benchTally{}
	tally.reset(0)
	fake, err := fakefcm.Start(fakefcm.Config{Latency: *latency, DontRecord: true, OnAccept: tally.observe})
	if err != nil {
		return err
	}
	defer fake.Close()

	out := bufio.NewWriter(stdout)
	enc := json.NewEncoder(out)
	send := func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		return out.Flush()
	}
	if err := send(benchFakeHello{URL: fake.URL(), Project: fake.ProjectID(), CertPEM: string(fake.CertPEM())}); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	for {
		var req benchFakeRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the bench is done (or gone)
			}
			return fmt.Errorf("read request: %w", err)
		}
		var result any
		switch req.Op {
		case "reset":
			tally.reset(req.N)
			fake.ResetRecorded()
			result = struct{}{}
		case "progress":
			result = tally.progress()
		case "stats":
			result = benchFakeStats{Tally: tally.stats(), Connections: fake.Connections(), Requests: fake.Requests(),
				CPUSeconds: benchProcessCPU().Seconds()}
		case "latency":
			result = tally.latency(req.Segments)
		case "configure":
			configureFake(fake, time.Duration(req.LatencyNanos), req.FailEvery)
			result = struct{}{}
		default:
			if err := send(benchFakeResponse{Error: "unknown op " + req.Op}); err != nil {
				return err
			}
			continue
		}
		b, err := json.Marshal(result)
		if err != nil {
			return err
		}
		if err := send(benchFakeResponse{Result: b}); err != nil {
			return err
		}
	}
}

// benchProcessFake is the parent's end of the child process.
type benchProcessFake struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	enc   *json.Encoder
	dec   *json.Decoder
	mu    sync.Mutex // one request at a time
	hello benchFakeHello
}

func startBenchFakeProcess(ctx context.Context, latency time.Duration, stderr io.Writer) (*benchProcessFake, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable for the fake fcm: %w", err)
	}
	cmd := exec.Command(exe, FakeFCMCommand, "-latency", latency.String())
	cmd.Env = append(os.Environ(), benchFakeEnv+"=1")
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start fake fcm process: %w", err)
	}
	p := &benchProcessFake{cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin), dec: json.NewDecoder(bufio.NewReader(stdout))}
	hello := make(chan error, 1)
	go func() { hello <- p.dec.Decode(&p.hello) }()
	select {
	case err = <-hello:
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(30 * time.Second):
		err = errors.New("no answer within 30s")
	}
	if err == nil && len(p.hello.CertPEM) == 0 {
		err = errors.New("no certificate in its hello")
	}
	if err != nil {
		_ = p.close()
		return nil, fmt.Errorf("start fake fcm process: %w", err)
	}
	return p, nil
}

func (p *benchProcessFake) call(req benchFakeRequest, result any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.enc.Encode(req); err != nil {
		return fmt.Errorf("fake fcm process: %s: %w", req.Op, err)
	}
	var resp benchFakeResponse
	if err := p.dec.Decode(&resp); err != nil {
		return fmt.Errorf("fake fcm process: %s: %w", req.Op, err)
	}
	if resp.Error != "" {
		return fmt.Errorf("fake fcm process: %s: %s", req.Op, resp.Error)
	}
	return json.Unmarshal(resp.Result, result)
}

func (p *benchProcessFake) clientOptions() (string, []option.ClientOption, error) {
	opts, err := fakefcm.RemoteClientOptions(p.hello.URL, []byte(p.hello.CertPEM))
	return p.hello.Project, opts, err
}

func (p *benchProcessFake) endpoint() (string, string, string, error) {
	return p.hello.Project, p.hello.URL, p.hello.CertPEM, nil
}

func (p *benchProcessFake) reset(n int) error {
	return p.call(benchFakeRequest{Op: "reset", N: n}, &struct{}{})
}

func (p *benchProcessFake) progress() (benchProgress, error) {
	var r benchProgress
	return r, p.call(benchFakeRequest{Op: "progress"}, &r)
}

func (p *benchProcessFake) stats() (benchFakeStats, error) {
	var r benchFakeStats
	return r, p.call(benchFakeRequest{Op: "stats"}, &r)
}

func (p *benchProcessFake) latency(segments []benchCommitSegment) (benchLatency, error) {
	var r benchLatency
	return r, p.call(benchFakeRequest{Op: "latency", Segments: segments}, &r)
}

func (p *benchProcessFake) configure(latency time.Duration, failEvery int) error {
	return p.call(benchFakeRequest{Op: "configure", LatencyNanos: int64(latency), FailEvery: failEvery}, &struct{}{})
}

func (p *benchProcessFake) mode() string { return "process" }

// close ends the child by closing its stdin, and kills it if it lingers.
func (p *benchProcessFake) close() error {
	_ = p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		return <-done
	}
}
