package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/internal/cli"
)

// replicasResult is `herald bench replicas`'s line: the same personalised
// backlog sent by one Herald process, then by -processes processes, each
// on a fresh database of the same Postgres, against the same fake FCM.
type replicasResult struct {
	Scenario   string `json:"scenario"`
	Processes  int    `json:"processes"`
	Deliveries int    `json:"deliveries"`
	// RateLimit is every process's Sender.RatePerMinute: the project's
	// budget once instances share it, each process's own before.
	RateLimit          int     `json:"rate_limit"`
	RateLimitPerSecond float64 `json:"rate_limit_per_second"`
	InFlight           int     `json:"in_flight"`
	FCMLatencyMs       float64 `json:"fcm_latency_ms"`

	One   *replicasPhase `json:"one"`
	Fleet *replicasPhase `json:"fleet"`

	// Speedup is the fleet's deliveries per second over one process's.
	Speedup float64 `json:"speedup"`
	// CPURatio is the fleet's CPU per delivery, its Herald processes and
	// Postgres together, over one process's: the cost of coordination
	// (the target is at most 1.10). HeraldCPURatio and PostgresCPURatio
	// are its two parts, each on its own. The fake FCM is left out: it
	// stands for Google's servers.
	CPURatio         float64 `json:"cpu_ratio"`
	HeraldCPURatio   float64 `json:"herald_cpu_ratio"`
	PostgresCPURatio float64 `json:"postgres_cpu_ratio"`

	LoadAverageStart float64 `json:"load_average_start"`
	LoadAverage      float64 `json:"load_average"`
	Fake             string  `json:"fake"`
	GoVersion        string  `json:"go_version"`
	CPUs             int     `json:"cpus"`
	PostgresVersion  string  `json:"postgres_version"`
}

// replicasPhase is one phase: a backlog committed, then sent by Processes
// Herald processes started together.
type replicasPhase struct {
	Processes int  `json:"processes"`
	Complete  bool `json:"complete"`
	// Seconds runs from the moment the committed backlog became visible to
	// the running processes until FCM accepted its last push.
	Seconds             float64 `json:"seconds"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	// PerProcess is each process's share of the pushes it sent.
	PerProcess []replicasProcess `json:"per_process"`
	// MinShare and MaxShare are the smallest and largest shares; with N
	// processes a fair split is 1/N each.
	MinShare float64 `json:"min_share"`
	MaxShare float64 `json:"max_share"`
	// MaxPerSecondWindow is the most pushes FCM accepted from the whole
	// fleet in any one second (sliding, 10 ms steps); RateLimitExcess is
	// it over the rate limit, minus one (at most 0.05 is within target;
	// negative when the limit did not bind).
	MaxPerSecondWindow int64   `json:"max_per_second_window"`
	RateLimitExcess    float64 `json:"rate_limit_excess"`
	Lost               int     `json:"lost"`
	Duplicates         int64   `json:"duplicates"`
	Unexpected         int64   `json:"unexpected"`
	Mismatched         int64   `json:"mismatched"`
	SentRecorded       int     `json:"sent_recorded"`
	// CPU over the phase: the Herald processes (their rusage, from start-up
	// to exit), Postgres (postmaster and backends, from the backlog's
	// release) and the fake FCM.
	HeraldCPUSeconds         float64 `json:"herald_cpu_seconds"`
	PostgresCPUSeconds       float64 `json:"postgres_cpu_seconds"`
	FakeCPUSeconds           float64 `json:"fake_cpu_seconds"`
	HeraldCPUPerDeliveryUs   float64 `json:"herald_cpu_per_delivery_us"`
	PostgresCPUPerDeliveryUs float64 `json:"postgres_cpu_per_delivery_us"`
	Requests                 int64   `json:"requests"`
	Connections              int64   `json:"connections"`
	LoadAverage              float64 `json:"load_average"`
	// Statements are Postgres's busiest statements over the phase, all
	// processes together, with -pgstats.
	Statements []benchStatement `json:"postgres_statements,omitempty"`
}

// replicasProcess is one Herald process's part of a phase.
type replicasProcess struct {
	PID        int     `json:"pid"`
	Sent       int64   `json:"sent"`
	Share      float64 `json:"share"`
	Claimed    int64   `json:"claimed"`
	Released   int64   `json:"released"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// RelayEvents are the events this process's relay expanded.
	RelayEvents int64 `json:"relay_events"`
}

// replicas runs `herald bench replicas`: one process, then the fleet.
func (b *bench) replicas(ctx context.Context) (*replicasResult, error) {
	res := &replicasResult{Scenario: "replicas", Processes: b.opts.processes, Deliveries: b.opts.n,
		RateLimit: b.opts.rateLimit, InFlight: b.opts.inFlight,
		FCMLatencyMs: float64(b.opts.fcmLatency) / float64(time.Millisecond), LoadAverageStart: benchLoadAverage(),
		Fake: b.fake.mode(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), PostgresVersion: b.pgVer}
	if res.RateLimit == 0 {
		res.RateLimit = benchDefaultRatePerMinute
	}
	res.RateLimitPerSecond = float64(res.RateLimit) / 60
	var err error
	if res.One, err = b.replicasPhase(ctx, 1, res.RateLimitPerSecond); err != nil {
		return nil, fmt.Errorf("one process: %w", err)
	}
	if res.Fleet, err = b.replicasPhase(ctx, b.opts.processes, res.RateLimitPerSecond); err != nil {
		return nil, fmt.Errorf("%d processes: %w", b.opts.processes, err)
	}
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	res.Speedup = ratio(res.Fleet.DeliveriesPerSecond, res.One.DeliveriesPerSecond)
	res.CPURatio = ratio(res.Fleet.HeraldCPUPerDeliveryUs+res.Fleet.PostgresCPUPerDeliveryUs,
		res.One.HeraldCPUPerDeliveryUs+res.One.PostgresCPUPerDeliveryUs)
	res.HeraldCPURatio = ratio(res.Fleet.HeraldCPUPerDeliveryUs, res.One.HeraldCPUPerDeliveryUs)
	res.PostgresCPURatio = ratio(res.Fleet.PostgresCPUPerDeliveryUs, res.One.PostgresCPUPerDeliveryUs)
	res.LoadAverage = benchLoadAverage()
	return res, nil
}

// replicasPhase starts the processes on a fresh database, hands them the
// backlog all at once, waits until FCM accepted every push and Herald
// recorded every outcome, then stops them.
func (b *bench) replicasPhase(ctx context.Context, processes int, perSecond float64) (*replicasPhase, error) {
	name := fmt.Sprintf("replicas_%d", processes)
	pool, drop, err := b.newDatabase(ctx, name)
	if err != nil {
		return nil, err
	}
	defer drop()
	n := b.opts.n
	if err := benchLoadTokens(ctx, pool, n, b.progressf); err != nil {
		return nil, fmt.Errorf("load tokens: %w", err)
	}
	procs := make([]*benchHeraldProcess, 0, processes)
	stopAll := func() ([]benchHeraldReport, []time.Duration, error) {
		var reports []benchHeraldReport
		var cpus []time.Duration
		var errs []error
		for _, p := range procs {
			r, c, err := p.stop()
			reports, cpus, errs = append(reports, r), append(cpus, c), append(errs, err)
		}
		procs = nil
		return reports, cpus, errors.Join(errs...)
	}
	defer func() { _, _, _ = stopAll() }()
	// The processes start first and the backlog is committed while the
	// relay is held, then shown to all of them at once: none has a head
	// start, and the clock starts with the work.
	for range processes {
		p, err := b.startBenchHerald(b.cluster.URL("bench_" + name))
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if err := p.waitReady(ctx); err != nil {
			return nil, err
		}
	}
	release, err := holdRelay(ctx, pool)
	if err != nil {
		return nil, err
	}
	err = b.commitEvents(ctx, pool, benchRules(benchCampaignRule), n)
	if err == nil {
		err = b.fake.reset(n)
	}
	if err != nil {
		release()
		return nil, err
	}
	fake0, err := b.fake.stats()
	if err != nil {
		release()
		return nil, err
	}
	b.progressf("%s: %d pushes committed; %d herald process(es) running", name, n, processes)
	if b.opts.pgStats {
		if _, err := b.admin.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
			release()
			return nil, fmt.Errorf("reset pg_stat_statements: %w", err)
		}
	}
	pg0 := benchPostgresCPU(b.dataDir())
	// Each process's CPU counts from here, as Postgres's does: what they
	// spent starting and idling while the backlog was committed is not
	// the work measured (and grows with the number of processes).
	idle := make([]time.Duration, len(procs))
	for i, p := range procs {
		idle[i] = benchChildCPU(p.cmd.Process.Pid)
	}
	start := time.Now()
	release()
	done := make(chan error)
	close(done) // nothing more is raised
	log := &benchCommitLog{first: start.UnixNano()}
	complete, err := b.waitAccepted(ctx, name, n, done, log, false)
	if err != nil {
		return nil, err
	}
	if complete {
		b.waitIdle(ctx, pool)
	}
	cli.Sleep(ctx, 250*time.Millisecond+2*b.opts.fcmLatency) // a late duplicate
	reports, cpus, err := stopAll()
	if err != nil {
		return nil, err
	}
	ph := &replicasPhase{Processes: processes, Complete: complete,
		PostgresCPUSeconds: (benchPostgresCPU(b.dataDir()) - pg0).Seconds()}
	for i, c := range cpus {
		ph.HeraldCPUSeconds += (c - idle[i]).Seconds()
	}
	stats, err := b.fake.stats()
	if err != nil {
		return nil, err
	}
	ph.FakeCPUSeconds = stats.CPUSeconds - fake0.CPUSeconds
	t := stats.Tally
	end := t.DoneNanos
	if end == 0 {
		end = t.LastNanos
	}
	if end > start.UnixNano() {
		ph.Seconds = float64(end-start.UnixNano()) / 1e9
		ph.DeliveriesPerSecond = float64(t.Distinct) / ph.Seconds
	}
	ph.Lost, ph.Duplicates, ph.Unexpected, ph.Mismatched = t.Lost, t.Duplicates, t.Unexpected, t.Mismatched
	ph.MaxPerSecondWindow = t.MaxPerSecond
	ph.RateLimitExcess = float64(t.MaxPerSecond)/perSecond - 1
	ph.Requests, ph.Connections = stats.Requests, stats.Connections
	var sent int64
	for _, r := range reports {
		sent += r.Sent
	}
	ph.MinShare = 1
	for i, r := range reports {
		p := replicasProcess{PID: r.PID, Sent: r.Sent, Claimed: r.Claimed, Released: r.Released, RelayEvents: r.RelayEvents,
			CPUSeconds: cpus[i].Seconds()}
		if sent > 0 {
			p.Share = float64(r.Sent) / float64(sent)
		}
		ph.MinShare, ph.MaxShare = min(ph.MinShare, p.Share), max(ph.MaxShare, p.Share)
		ph.PerProcess = append(ph.PerProcess, p)
	}
	if t.Distinct > 0 {
		ph.HeraldCPUPerDeliveryUs = ph.HeraldCPUSeconds / float64(t.Distinct) * 1e6
		ph.PostgresCPUPerDeliveryUs = ph.PostgresCPUSeconds / float64(t.Distinct) * 1e6
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE status = 'sent'`).Scan(&ph.SentRecorded); err != nil {
		return nil, fmt.Errorf("count sent deliveries: %w", err)
	}
	if ph.Statements, err = b.topStatements(ctx); err != nil {
		return nil, err
	}
	ph.LoadAverage = benchLoadAverage()
	b.progressf("%s: %d of %d accepted in %.1fs (%.0f/s), shares %.2f-%.2f, busiest second %d (limit %.0f), lost %d, duplicates %d, cpu/delivery herald %.0fµs postgres %.0fµs",
		name, t.Distinct, n, ph.Seconds, ph.DeliveriesPerSecond, ph.MinShare, ph.MaxShare, t.MaxPerSecond, perSecond,
		t.Lost, t.Duplicates, ph.HeraldCPUPerDeliveryUs, ph.PostgresCPUPerDeliveryUs)
	return ph, nil
}

// holdRelay opens a transaction with a transaction id: the relay sees no
// event committed after it (the outbox is read below the cluster's oldest
// running transaction) until release is called.
func holdRelay(ctx context.Context, pool *pgxpool.Pool) (release func(), err error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("hold the relay: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("hold the relay: %w", err)
	}
	return func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }, nil
}
