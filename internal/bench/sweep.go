package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/herald-push/herald/internal/cli"
)

// `herald bench latency-sweep` and `herald bench backlog` run one Herald
// process (a child, so that its memory and CPU are its own) against the
// fake FCM, on a fresh database per phase.

// sweepRatePerMinute is latency-sweep's Sender.RatePerMinute: 5,000/s.
const sweepRatePerMinute = 300_000

// sweepLatencies are the fake FCM's round trips latency-sweep steps through.
var sweepLatencies = []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond}

// sweepFailEvery: in the last phase the fake answers 503 to one request in
// this many.
const sweepFailEvery = 10

// sweepResult is latency-sweep's line.
type sweepResult struct {
	Scenario           string  `json:"scenario"`
	RateLimit          int     `json:"rate_limit"`
	RateLimitPerSecond float64 `json:"rate_limit_per_second"`
	// Deliveries is each phase's backlog (the 503 phase's is a quarter).
	Deliveries int `json:"deliveries"`
	// Steps are the phases at each latency, Sender.MaxInFlight unset.
	Steps []*childPhase `json:"steps"`
	// Unavailable is the phase at 50 ms with one request in ten answered
	// 503: the limit shrinks (see its Limits).
	Unavailable      *childPhase `json:"unavailable"`
	LoadAverageStart float64     `json:"load_average_start"`
	LoadAverage      float64     `json:"load_average"`
	Fake             string      `json:"fake"`
	GoVersion        string      `json:"go_version"`
	CPUs             int         `json:"cpus"`
	PostgresVersion  string      `json:"postgres_version"`
}

// backlogResult is backlog's line: a sender process started on a backlog
// of each size, committed before it started.
type backlogResult struct {
	Scenario string        `json:"scenario"`
	Phases   []*childPhase `json:"phases"`
	// RSSRatio is the largest backlog's peak RSS over the smallest's
	// (target: at most 1.2).
	RSSRatio         float64 `json:"rss_ratio"`
	LoadAverageStart float64 `json:"load_average_start"`
	LoadAverage      float64 `json:"load_average"`
	Fake             string  `json:"fake"`
	GoVersion        string  `json:"go_version"`
	CPUs             int     `json:"cpus"`
	PostgresVersion  string  `json:"postgres_version"`
}

// childPhase is one Herald process sending one backlog.
type childPhase struct {
	Deliveries   int     `json:"deliveries"`
	FCMLatencyMs float64 `json:"fcm_latency_ms"`
	// FailEvery: the fake answered 503 to one request in this many (0:
	// none).
	FailEvery int `json:"fail_every,omitempty"`
	// InFlight is Sender.MaxInFlight (0: adaptive).
	InFlight  int  `json:"in_flight"`
	RateLimit int  `json:"rate_limit"`
	Complete  bool `json:"complete"`
	// Seconds runs from the backlog's release (latency-sweep) or the
	// process's start (backlog) until FCM accepted the last push.
	Seconds             float64 `json:"seconds"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	// SteadyPerSecond is the rate between 10 % and 90 % of the backlog
	// accepted (the ramp and the tail left out), and SteadyShare it over
	// the rate limit (target at least 0.9).
	SteadyPerSecond float64 `json:"steady_per_second"`
	SteadyShare     float64 `json:"steady_share,omitempty"`
	// PeakInFlightLimit and FinalInFlightLimit are the sender's limit at
	// its largest and at the end; Limits samples it every half second.
	PeakInFlightLimit  int64   `json:"peak_in_flight_limit"`
	FinalInFlightLimit int64   `json:"final_in_flight_limit"`
	Limits             []int64 `json:"limits,omitempty"`
	// Requests and Accepted are the fake's: the difference is requests it
	// answered with an error.
	Requests      int64 `json:"requests"`
	Accepted      int64 `json:"accepted"`
	QuotaExceeded int64 `json:"quota_exceeded"`
	CircuitOpen   int64 `json:"circuit_open"`
	// MaxPerSecondWindow is the most pushes FCM accepted in one second.
	MaxPerSecondWindow int64 `json:"max_per_second_window"`
	Lost               int   `json:"lost"`
	Duplicates         int64 `json:"duplicates"`
	// PeakRSSBytes is the Herald process's peak resident set (its own
	// VmHWM) over its whole life; HeraldCPUSeconds its CPU time.
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	// The Go runtime's peaks in the process (sampled every 200 ms): heap
	// in use, goroutine stacks, memory from the OS, goroutines.
	PeakHeapInuseMiB  float64 `json:"peak_heap_inuse_mib"`
	PeakStackInuseMiB float64 `json:"peak_stack_inuse_mib"`
	PeakSysMiB        float64 `json:"peak_sys_mib"`
	PeakGoroutines    int     `json:"peak_goroutines"`
	// PeakRSSAnonMiB and PeakRSSFileMiB split the resident set: anonymous
	// (heap, stacks, runtime) and file-backed (the binary's pages).
	PeakRSSAnonMiB   float64 `json:"peak_rss_anon_mib"`
	PeakRSSFileMiB   float64 `json:"peak_rss_file_mib"`
	HeraldCPUSeconds float64 `json:"herald_cpu_seconds"`
	LoadAverage      float64 `json:"load_average"`
}

// latencySweep runs `herald bench latency-sweep`.
func (b *bench) latencySweep(ctx context.Context) (*sweepResult, error) {
	res := &sweepResult{Scenario: "latency-sweep", RateLimit: sweepRatePerMinute, RateLimitPerSecond: sweepRatePerMinute / 60,
		Deliveries: b.opts.n, LoadAverageStart: benchLoadAverage(),
		Fake: b.fake.mode(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), PostgresVersion: b.pgVer}
	for _, latency := range sweepLatencies {
		ph, err := b.runChildPhase(ctx, childPhaseSpec{name: fmt.Sprintf("sweep_%d", latency.Milliseconds()), n: b.opts.n,
			latency: latency, rateLimit: sweepRatePerMinute})
		if err != nil {
			return nil, fmt.Errorf("latency %s: %w", latency, err)
		}
		res.Steps = append(res.Steps, ph)
	}
	ph, err := b.runChildPhase(ctx, childPhaseSpec{name: "sweep_503", n: max(1, b.opts.n/4), latency: 50 * time.Millisecond,
		failEvery: sweepFailEvery, rateLimit: sweepRatePerMinute, maxDuration: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("503s: %w", err)
	}
	res.Unavailable = ph
	res.LoadAverage = benchLoadAverage()
	return res, nil
}

// backlogSizes are the backlogs `herald bench backlog` starts a sender on.
var backlogSizes = []int{20_000, 400_000}

// backlog runs `herald bench backlog`: Herald's defaults (MaxInFlight
// unset, unless -inflight is given) but for -rate-limit, at -latency.
func (b *bench) backlog(ctx context.Context) (*backlogResult, error) {
	res := &backlogResult{Scenario: "backlog", LoadAverageStart: benchLoadAverage(),
		Fake: b.fake.mode(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), PostgresVersion: b.pgVer}
	for _, n := range backlogSizes {
		spec := childPhaseSpec{name: fmt.Sprintf("backlog_%d", n), n: n, latency: b.opts.fcmLatency,
			rateLimit: b.opts.rateLimit, backlogFirst: true}
		if b.opts.inFlightSet {
			spec.inFlight = b.opts.inFlight
		}
		ph, err := b.runChildPhase(ctx, spec)
		if err != nil {
			return nil, fmt.Errorf("backlog %d: %w", n, err)
		}
		res.Phases = append(res.Phases, ph)
	}
	if first := res.Phases[0].PeakRSSBytes; first > 0 {
		res.RSSRatio = float64(res.Phases[len(res.Phases)-1].PeakRSSBytes) / float64(first)
	}
	res.LoadAverage = benchLoadAverage()
	return res, nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

type childPhaseSpec struct {
	name      string
	n         int
	latency   time.Duration
	failEvery int
	inFlight  int // 0: adaptive
	rateLimit int // 0: Herald's default
	// backlogFirst commits the backlog before the process starts (its
	// start-up sees all of it); otherwise the process starts first and the
	// backlog is released to it at once.
	backlogFirst bool
	// maxDuration, when set, stops the phase that long after the backlog
	// was released, complete or not.
	maxDuration time.Duration
}

// runChildPhase sends one backlog with one Herald process.
func (b *bench) runChildPhase(ctx context.Context, spec childPhaseSpec) (*childPhase, error) {
	pool, drop, err := b.newDatabase(ctx, spec.name)
	if err != nil {
		return nil, err
	}
	defer drop()
	if err := b.fake.configure(spec.latency, 0); err != nil {
		return nil, err
	}
	defer func() { _ = b.fake.configure(b.opts.fcmLatency, 0) }()
	if err := benchLoadTokens(ctx, pool, spec.n, b.progressf); err != nil {
		return nil, fmt.Errorf("load tokens: %w", err)
	}
	if spec.backlogFirst {
		if err := b.commitEvents(ctx, pool, benchRules(benchCampaignRule), spec.n); err != nil {
			return nil, err
		}
	}
	if err := b.fake.reset(spec.n); err != nil {
		return nil, err
	}
	if err := b.fake.configure(spec.latency, spec.failEvery); err != nil {
		return nil, err
	}
	fake0, err := b.fake.stats()
	if err != nil {
		return nil, err
	}
	p, err := b.startBenchHeraldWith(b.cluster.URL("bench_"+spec.name), spec.inFlight, spec.rateLimit)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _, _ = p.stop()
		}
	}()
	start := time.Now()
	if err := p.waitReady(ctx); err != nil {
		return nil, err
	}
	if !spec.backlogFirst {
		release, err := holdRelay(ctx, pool)
		if err != nil {
			return nil, err
		}
		err = b.commitEvents(ctx, pool, benchRules(benchCampaignRule), spec.n)
		if err == nil {
			err = b.fake.reset(spec.n)
		}
		if err != nil {
			release()
			return nil, err
		}
		if fake0, err = b.fake.stats(); err != nil {
			release()
			return nil, err
		}
		start = time.Now()
		release()
	}
	b.progressf("%s: %d pushes, fcm latency %s, one 503 in %d (0: none), rate limit %d/min, inflight %d (0: adaptive)",
		spec.name, spec.n, spec.latency, spec.failEvery, spec.rateLimit, spec.inFlight)

	// Sample the fake's progress until every push arrived (or time is up).
	type sample struct {
		at       time.Time
		distinct int
	}
	var samples []sample
	complete := false
	nextReport := start.Add(5 * time.Second)
	for {
		pr, err := b.fake.progress()
		if err != nil {
			return nil, err
		}
		now := time.Now()
		samples = append(samples, sample{now, pr.Distinct})
		if pr.Distinct >= spec.n {
			complete = true
			break
		}
		if (spec.maxDuration > 0 && now.Sub(start) > spec.maxDuration) || now.Sub(start) > b.opts.timeout {
			break
		}
		if now.After(nextReport) {
			b.progressf("%s: %d of %d accepted after %.0fs", spec.name, pr.Distinct, spec.n, now.Sub(start).Seconds())
			nextReport = nextReport.Add(5 * time.Second)
		}
		if !cli.Sleep(ctx, 100*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	if complete {
		b.waitIdle(ctx, pool)
	}
	cli.Sleep(ctx, 250*time.Millisecond+2*spec.latency) // a late duplicate
	report, cpu, err := p.stop()
	stopped = true
	if err != nil {
		return nil, err
	}
	stats, err := b.fake.stats()
	if err != nil {
		return nil, err
	}
	t := stats.Tally
	ph := &childPhase{Deliveries: spec.n, FCMLatencyMs: float64(spec.latency) / float64(time.Millisecond), FailEvery: spec.failEvery,
		InFlight: spec.inFlight, RateLimit: spec.rateLimit, Complete: complete,
		PeakInFlightLimit: report.PeakInFlightLimit, FinalInFlightLimit: report.InFlightLimit, Limits: report.Limits,
		Requests: stats.Requests - fake0.Requests, Accepted: t.Accepted, QuotaExceeded: report.QuotaExceeded,
		CircuitOpen: report.CircuitOpen, MaxPerSecondWindow: t.MaxPerSecond, Lost: t.Lost, Duplicates: t.Duplicates,
		PeakRSSBytes: report.PeakRSS, PeakRSSMiB: mib(uint64(report.PeakRSS)), HeraldCPUSeconds: cpu.Seconds(),
		LoadAverage:      benchLoadAverage(),
		PeakHeapInuseMiB: mib(report.PeakHeapInuse), PeakStackInuseMiB: mib(report.PeakStackInuse),
		PeakSysMiB: mib(report.PeakSys), PeakGoroutines: report.PeakGoroutines,
		PeakRSSAnonMiB: mib(uint64(report.PeakRSSAnon)), PeakRSSFileMiB: mib(uint64(report.PeakRSSFile))}
	end := t.DoneNanos
	if end == 0 {
		end = t.LastNanos
	}
	if end > start.UnixNano() {
		ph.Seconds = float64(end-start.UnixNano()) / 1e9
		ph.DeliveriesPerSecond = float64(t.Distinct) / ph.Seconds
	}
	// The steady rate: between the samples where 10 % and 90 % had arrived.
	var from, to *sample
	for i := range samples {
		s := &samples[i]
		if from == nil && s.distinct >= spec.n/10 {
			from = s
		}
		if to == nil && s.distinct >= spec.n*9/10 {
			to = s
		}
	}
	if to == nil && len(samples) > 0 {
		to = &samples[len(samples)-1]
	}
	if from != nil && to != nil && to.at.After(from.at) {
		ph.SteadyPerSecond = float64(to.distinct-from.distinct) / to.at.Sub(from.at).Seconds()
		if spec.rateLimit > 0 {
			ph.SteadyShare = ph.SteadyPerSecond / (float64(spec.rateLimit) / 60)
		}
	}
	b.progressf("%s: %d of %d accepted in %.1fs (%.0f/s, steady %.0f/s), limit peak %d final %d, requests %d, lost %d, duplicates %d, peak rss %.1f MiB (anon %.1f, file %.1f; heap %.1f, stacks %.1f, %d goroutines), load %.1f",
		spec.name, t.Distinct, spec.n, ph.Seconds, ph.DeliveriesPerSecond, ph.SteadyPerSecond, ph.PeakInFlightLimit,
		ph.FinalInFlightLimit, ph.Requests, t.Lost, t.Duplicates, ph.PeakRSSMiB, ph.PeakRSSAnonMiB, ph.PeakRSSFileMiB, ph.PeakHeapInuseMiB, ph.PeakStackInuseMiB,
		ph.PeakGoroutines, ph.LoadAverage)
	return ph, nil
}
