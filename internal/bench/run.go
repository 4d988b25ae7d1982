package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"firebase.google.com/go/v4/messaging"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/api/option"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/notification"
)

// benchDefaultRatePerMinute is Herald's default Sender.RatePerMinute, reported
// when -rate-limit is not given.
const benchDefaultRatePerMinute = 600_000

// benchScenario is what differs between scenarios: the host's rules, the tokens
// loaded before the clock starts, and the host code that commits events.
type benchScenario struct {
	name string
	// keys is how many pushes the scenario commits: one to each of the
	// tokens with keys 0..keys-1, which the bench registers first, outside
	// the timing (benchLoadTokens: one user each).
	keys  int
	rules *notification.Rules
	// raise commits the events in host transactions while Herald runs,
	// logging each commit.
	raise func(ctx context.Context, h *herald.Herald, pool *pgxpool.Pool, log *benchCommitLog) error
	// message, when set, is push i as fire-and-forget code builds it: the
	// baseline sends these straight through the SDK.
	message func(i int) *messaging.Message
}

// benchCommitLog records when the pushes of each key range were committed.
type benchCommitLog struct {
	mu       sync.Mutex
	segments []benchCommitSegment
	first    int64 // unix nanoseconds of the first and last commit
	last     int64
}

// committed logs that keys [from, to) were committed just now.
func (l *benchCommitLog) committed(from, to int) {
	now := time.Now().UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.segments = append(l.segments, benchCommitSegment{From: from, To: to, CommitNanos: now})
	if l.first == 0 || now < l.first {
		l.first = now
	}
	l.last = max(l.last, now)
}

func (l *benchCommitLog) snapshot() (segments []benchCommitSegment, first, last int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]benchCommitSegment(nil), l.segments...), l.first, l.last
}

// benchConfig is Herald's configuration in the bench: the defaults, with
// the in-flight bound and rate limit from the flags.
func (b *bench) benchConfig() herald.Config {
	return herald.Config{
		Logger: b.log,
		Sender: herald.SenderConfig{MaxInFlight: b.opts.inFlight, RatePerMinute: b.opts.rateLimit},
	}
}

// measure loads the scenario's tokens, runs the baseline if it has one,
// then runs Herald while the scenario raises its events, until FCM has
// accepted every committed push (or the timeout), and accounts for them.
func (b *bench) measure(ctx context.Context, pool *pgxpool.Pool, sc *benchScenario, cpuProfile, memProfile string, tel *benchTelemetry) (*benchResult, error) {
	began := time.Now()
	if err := benchLoadTokens(ctx, pool, sc.keys, b.progressf); err != nil {
		return nil, fmt.Errorf("load tokens: %w", err)
	}
	b.progressf("%s: loaded %d tokens in %.1fs", sc.name, sc.keys, time.Since(began).Seconds())
	res := &benchResult{Scenario: sc.name, Deliveries: sc.keys, RateLimit: b.opts.rateLimit}
	if res.RateLimit == 0 {
		res.RateLimit = benchDefaultRatePerMinute
	}
	if sc.message != nil && b.opts.baseline {
		base, err := b.baseline(ctx, sc)
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		res.Baseline = base
		res.BaselinePerSecond = &base.PerSecond
	}

	fcm, err := benchFCMClient(ctx, b.fake, sc.keys, herald.NewFCM)
	if err != nil {
		return nil, err
	}
	cfg := b.benchConfig()
	tel.apply(&cfg)
	h, err := herald.New(pool, fcm, sc.rules, cfg)
	if err != nil {
		return nil, err
	}
	b.resetMemory()
	fake0, err := b.fake.stats()
	if err != nil {
		return nil, err
	}
	cpu0, pg0 := benchProcessCPU(), benchPostgresCPU(b.dataDir())
	stopProfile, err := benchStartCPUProfile(cpuProfile)
	if err != nil {
		return nil, err
	}
	defer stopProfile()

	if b.opts.pgStats {
		if _, err := b.admin.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
			return nil, fmt.Errorf("reset pg_stat_statements: %w", err)
		}
		b.tracer.reset()
	}
	runCtx, stopHerald := context.WithCancel(ctx)
	defer stopHerald()
	ran := make(chan error, 1)
	go func() { ran <- h.Run(runCtx) }()
	sampled := make(chan benchInFlight, 1)
	go func() { sampled <- sampleInFlight(runCtx, h) }()
	log := &benchCommitLog{}
	raised := make(chan error, 1)
	b.progressf("%s: herald running; raising events", sc.name)
	go func() { raised <- sc.raise(ctx, h, pool, log) }()

	complete, err := b.waitAccepted(ctx, sc.name, sc.keys, raised, log, false)
	if err != nil {
		return nil, err
	}
	if complete {
		b.waitIdle(ctx, pool)
	}
	// A late duplicate would arrive within a push's round trip.
	cli.Sleep(ctx, 250*time.Millisecond+2*b.opts.fcmLatency)

	res.PeakRSSBytes, err = benchPeakRSS()
	if err != nil {
		b.log.Warn("peak rss unavailable", "err", err)
	}
	res.HeraldCPUSeconds = (benchProcessCPU() - cpu0).Seconds()
	res.PostgresCPUSeconds = (benchPostgresCPU(b.dataDir()) - pg0).Seconds()
	stopProfile()
	if err := benchWriteHeapProfile(memProfile); err != nil {
		return nil, err
	}
	stats, err := b.fake.stats()
	if err != nil {
		return nil, err
	}
	res.FakeCPUSeconds = stats.CPUSeconds - fake0.CPUSeconds

	statements, err := b.topStatements(ctx)
	if err != nil {
		return nil, err
	}
	res.Statements = statements
	if res.PostgresWork, err = b.postgresWork(ctx, sc.keys); err != nil {
		return nil, err
	}
	if b.tracer != nil {
		res.ClientStatements = b.tracer.top(12)
	}
	res.LoadAverage = benchLoadAverage()
	stopHerald()
	inFlight := <-sampled
	res.HeraldInFlightAvg, res.HeraldInFlightMax = inFlight.avg, inFlight.max
	select {
	case err := <-ran:
		if err != nil {
			b.log.Warn("herald run", "err", err)
		}
	case <-time.After(30 * time.Second):
		b.log.Warn("herald did not stop within 30s")
	}

	segments, first, last := log.snapshot()
	lat, err := b.fake.latency(segments)
	if err != nil {
		return nil, err
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE status = 'sent'`).Scan(&res.SentRecorded); err != nil {
		return nil, fmt.Errorf("count sent deliveries: %w", err)
	}
	var relayP50, relayP99 *float64
	if err := pool.QueryRow(ctx, `SELECT
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.created_at - n.created_at)),
			percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.created_at - n.created_at))
		FROM herald_deliveries d JOIN herald_notifications n ON n.id = d.notification_id`).Scan(&relayP50, &relayP99); err != nil {
		return nil, fmt.Errorf("relay latency: %w", err)
	}
	if b.opts.timeline {
		if err := b.printRelayTimeline(ctx, pool); err != nil {
			return nil, err
		}
	}
	if relayP50 != nil && relayP99 != nil {
		res.RelayP50Ms, res.RelayP99Ms = *relayP50*1000, *relayP99*1000
	}

	t := stats.Tally
	end := t.DoneNanos
	if end == 0 {
		end = t.LastNanos
	}
	res.Complete = complete
	if first > 0 && end > first {
		res.Seconds = float64(end-first) / 1e9
		res.DeliveriesPerSecond = float64(t.Distinct) / res.Seconds
	}
	if first > 0 {
		res.RaiseSeconds = float64(last-first) / 1e9
	}
	if res.Baseline != nil && res.Baseline.PerSecond > 0 {
		ratio := res.DeliveriesPerSecond / res.Baseline.PerSecond
		res.Ratio = &ratio
	}
	res.P50Ms, res.P99Ms, res.MaxMs = lat.P50, lat.P99, lat.Max
	res.Lost, res.Duplicates, res.Accepted = t.Lost, t.Duplicates, t.Accepted
	res.Unexpected, res.Mismatched = t.Unexpected, t.Mismatched
	res.Connections, res.Requests = stats.Connections, stats.Requests
	res.MaxPerSecondWindow = t.MaxPerSecond
	res.RateLimitExcess = float64(t.MaxPerSecond)/(float64(res.RateLimit)/60) - 1
	b.progressf("%s: %d of %d accepted in %.1fs (%.0f/s), lost %d, duplicates %d, peak rss %d MB",
		sc.name, t.Distinct, sc.keys, res.Seconds, res.DeliveriesPerSecond, t.Lost, t.Duplicates, res.PeakRSSBytes>>20)
	return res, nil
}

// benchFCMClient starts a phase of fake expecting keys pushes (see
// benchFake.reset) and makes a client of it with newClient: Herald's FCM
// for a run, the SDK's own client for the baseline.
func benchFCMClient[C any](ctx context.Context, fake benchFake, keys int, newClient func(context.Context, string, ...option.ClientOption) (C, error)) (C, error) {
	var zero C
	if err := fake.reset(keys); err != nil {
		return zero, err
	}
	project, opts, err := fake.clientOptions()
	if err != nil {
		return zero, err
	}
	return newClient(ctx, project, opts...)
}

// baseline sends the scenario's pushes straight through the SDK, one
// goroutine per push, at most -inflight at once, with no database: the
// fire-and-forget code users start from.
func (b *bench) baseline(ctx context.Context, sc *benchScenario) (*baselineResult, error) {
	client, err := benchFCMClient(ctx, b.fake, sc.keys, fakefcm.NewMessagingClient)
	if err != nil {
		return nil, err
	}
	b.progressf("%s: baseline: %d pushes straight through the SDK, %d in flight", sc.name, sc.keys, b.opts.inFlight)
	b.resetMemory()
	fake0, err := b.fake.stats()
	if err != nil {
		return nil, err
	}
	stopProfile, err := benchStartCPUProfile(b.baselineProfilePath())
	if err != nil {
		return nil, err
	}
	defer stopProfile()
	cpu0 := benchProcessCPU()
	start := time.Now()
	sendCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg     sync.WaitGroup
		errs   atomic.Int64
		slots  = make(chan struct{}, b.opts.inFlight)
		sent   = make(chan error, 1)
		sendFn = func() {
			defer close(sent)
			for i := range sc.keys {
				select {
				case slots <- struct{}{}:
				case <-sendCtx.Done():
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-slots }()
					pushCtx, cancel := context.WithTimeout(sendCtx, 20*time.Second)
					defer cancel()
					if _, err := client.Send(pushCtx, sc.message(i)); err != nil {
						errs.Add(1)
					}
				}()
			}
			wg.Wait()
		}
	)
	go sendFn()
	log := &benchCommitLog{first: start.UnixNano()}
	// Every push that FCM accepted was accepted before its Send returned.
	if _, err := b.waitAccepted(ctx, sc.name+" baseline", sc.keys, sent, log, true); err != nil {
		return nil, err
	}
	cancel()
	<-sent
	stopProfile()
	peak, err := benchPeakRSS()
	if err != nil {
		b.log.Warn("peak rss unavailable", "err", err)
	}
	cpu := benchProcessCPU() - cpu0
	stats, err := b.fake.stats()
	if err != nil {
		return nil, err
	}
	t := stats.Tally
	end := t.DoneNanos
	if end == 0 {
		end = t.LastNanos
	}
	res := &baselineResult{Connections: stats.Connections, PeakRSSBytes: peak, Errors: errs.Load(),
		Lost: t.Lost, Duplicates: t.Duplicates, CPUSeconds: cpu.Seconds(), FakeCPUSeconds: stats.CPUSeconds - fake0.CPUSeconds}
	if end > start.UnixNano() {
		res.Seconds = float64(end-start.UnixNano()) / 1e9
		res.PerSecond = float64(t.Distinct) / res.Seconds
	}
	b.progressf("%s: baseline: %d accepted in %.1fs (%.0f/s), %d connections",
		sc.name, t.Distinct, res.Seconds, res.PerSecond, res.Connections)
	return res, nil
}

// waitAccepted waits until FCM has accepted a push for every key and the
// producer is done (or, with untilProduced, only until the producer is
// done), printing progress. It reports false if the timeout (counted from
// the first commit) ran out first; it fails if the producer failed.
func (b *bench) waitAccepted(ctx context.Context, name string, keys int, produced <-chan error, log *benchCommitLog, untilProduced bool) (bool, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	began := time.Now()
	nextReport := began.Add(2 * time.Second)
	done := false
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case err, ok := <-produced:
			if ok && err != nil {
				return false, err
			}
			done, produced = true, nil
		case <-tick.C:
		}
		p, err := b.fake.progress()
		if err != nil {
			return false, err
		}
		if done && (untilProduced || p.Distinct >= keys) {
			return p.Distinct >= keys, nil
		}
		now := time.Now()
		_, first, _ := log.snapshot()
		if first > 0 && now.Sub(time.Unix(0, first)) > b.opts.timeout {
			b.progressf("%s: timed out after %s with %d of %d accepted", name, b.opts.timeout, p.Distinct, keys)
			return false, nil
		}
		if now.After(nextReport) {
			b.progressf("%s: %5.1fs  %d/%d accepted (%.0f/s)", name, now.Sub(began).Seconds(), p.Distinct, keys,
				float64(p.Distinct)/now.Sub(began).Seconds())
			nextReport = now.Add(2 * time.Second)
		}
	}
}

// waitIdle waits (up to 30s) until Herald has recorded every outcome and
// finished every broadcast, so that nothing is in flight when the counts
// are taken.
func (b *bench) waitIdle(ctx context.Context, pool *pgxpool.Pool) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var open int
		err := pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM herald_deliveries WHERE status IN ('pending', 'retry_scheduled', 'claimed')) +
			(SELECT count(*) FROM herald_broadcasts WHERE finished_at IS NULL)`).Scan(&open)
		if err != nil || open == 0 {
			return
		}
		if !cli.Sleep(ctx, 20*time.Millisecond) {
			return
		}
	}
	b.log.Warn("herald still had open deliveries 30s after the last accept")
}

// resetMemory returns freed memory to the OS and resets the peak RSS, so
// that the next benchPeakRSS is the phase's own.
func (b *bench) resetMemory() {
	runtime.GC()
	debug.FreeOSMemory()
	if err := benchResetPeakRSS(); err != nil {
		b.log.Warn("cannot reset peak rss: it includes everything before this phase", "err", err)
	}
}

func benchStartCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		})
	}, nil
}

func benchWriteHeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	return errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
}

// benchInFlight summarises samples of Herald's claimed, unfinished
// deliveries.
type benchInFlight struct {
	avg float64
	max int64
}

// sampleInFlight samples h's claimed-but-unfinished deliveries every 10ms
// while any are open, until ctx ends.
func sampleInFlight(ctx context.Context, h *herald.Herald) benchInFlight {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var sum, n, peak int64
	for {
		select {
		case <-ctx.Done():
			if n == 0 {
				return benchInFlight{}
			}
			return benchInFlight{avg: float64(sum) / float64(n), max: peak}
		case <-tick.C:
		}
		s := h.Stats().Sender
		open := s.Claimed - s.Sent - s.TokensPruned - s.Failed - s.RetriesScheduled - s.Released
		if open == 0 && s.Claimed == 0 {
			continue // not started yet
		}
		sum, n, peak = sum+open, n+1, max(peak, open)
	}
}

// benchStatement is one of Postgres's busiest statements.
type benchStatement struct {
	Calls        int64   `json:"calls"`
	TotalSeconds float64 `json:"total_s"`
	MeanMs       float64 `json:"mean_ms"`
	PlanSeconds  float64 `json:"plan_s"`
	Rows         int64   `json:"rows"`
	// Buffers (shared blocks hit or read), Dirtied and the WAL it wrote
	// measure the statement's work without the machine's load in them.
	Buffers    int64  `json:"buffers"`
	Dirtied    int64  `json:"dirtied"`
	WALRecords int64  `json:"wal_records"`
	WALBytes   int64  `json:"wal_bytes"`
	Query      string `json:"query"`
}

// benchPostgresWork is what every statement of a phase did in Postgres,
// per delivery, with -pgstats: shared buffers touched (hit or read),
// buffers dirtied, WAL records and WAL bytes. Unlike CPU time, these do not
// depend on how loaded the machine is, so two runs compare however noisy.
type benchPostgresWork struct {
	Buffers    float64 `json:"buffers"`
	Dirtied    float64 `json:"dirtied"`
	WALRecords float64 `json:"wal_records"`
	WALBytes   float64 `json:"wal_bytes"`
}

// postgresWork sums pg_stat_statements since the last reset over
// deliveries, with -pgstats (nil otherwise).
func (b *bench) postgresWork(ctx context.Context, deliveries int) (*benchPostgresWork, error) {
	if !b.opts.pgStats || deliveries == 0 {
		return nil, nil
	}
	var w benchPostgresWork
	err := b.admin.QueryRow(ctx, `SELECT coalesce(sum(shared_blks_hit + shared_blks_read), 0)::float8,
			coalesce(sum(shared_blks_dirtied), 0)::float8, coalesce(sum(wal_records), 0)::float8,
			coalesce(sum(wal_bytes), 0)::float8
		FROM pg_stat_statements`).Scan(&w.Buffers, &w.Dirtied, &w.WALRecords, &w.WALBytes)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_statements totals: %w", err)
	}
	n := float64(deliveries)
	w.Buffers, w.Dirtied, w.WALRecords, w.WALBytes = w.Buffers/n, w.Dirtied/n, w.WALRecords/n, w.WALBytes/n
	return &w, nil
}

// topStatements returns the ten statements that took the most time since
// the last reset, with -pgstats.
func (b *bench) topStatements(ctx context.Context) ([]benchStatement, error) {
	if !b.opts.pgStats {
		return nil, nil
	}
	rows, err := b.admin.Query(ctx, `SELECT calls, total_exec_time / 1000, mean_exec_time, total_plan_time / 1000, rows,
			shared_blks_hit + shared_blks_read, shared_blks_dirtied, wal_records, wal_bytes::bigint,
			regexp_replace(left(query, 160), '\s+', ' ', 'g')
		FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time DESC LIMIT 10`)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_statements: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (benchStatement, error) {
		var s benchStatement
		err := row.Scan(&s.Calls, &s.TotalSeconds, &s.MeanMs, &s.PlanSeconds, &s.Rows,
			&s.Buffers, &s.Dirtied, &s.WALRecords, &s.WALBytes, &s.Query)
		return s, err
	})
}

// printRelayTimeline prints, per second of raising, how many notifications
// were raised and how long the relay took to turn them into deliveries.
func (b *bench) printRelayTimeline(ctx context.Context, pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, `SELECT date_trunc('second', n.created_at), count(*),
			max(extract(epoch FROM d.created_at - n.created_at)) * 1000,
			avg(extract(epoch FROM d.created_at - n.created_at)) * 1000
		FROM herald_deliveries d JOIN herald_notifications n ON n.id = d.notification_id
		GROUP BY 1 ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("relay timeline: %w", err)
	}
	var (
		sec      time.Time
		n        int64
		mx, mean float64
	)
	_, err = pgx.ForEachRow(rows, []any{&sec, &n, &mx, &mean}, func() error {
		b.progressf("timeline %s raised %6d  relay lag max %7.0fms avg %7.0fms", sec.Format("15:04:05"), n, mx, mean)
		return nil
	})
	return err
}

// baselineProfilePath is where -cpuprofile writes the baseline phase's
// profile: the flag's file with ".baseline" appended, so that Herald's and
// the SDK's profiles of one run can be compared.
func (b *bench) baselineProfilePath() string {
	if b.opts.cpuProfile == "" {
		return ""
	}
	return b.opts.cpuProfile + ".baseline"
}
