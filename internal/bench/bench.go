package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/pgcluster"
	"github.com/herald-push/herald/migrations"
)

// benchScenarios lists the scenarios; the first three run by default, in
// this order. relay, replicas, latency-sweep and backlog run when named.
var benchScenarios = []string{"personalised", "broadcast", "latency", "relay", "replicas", "latency-sweep", "backlog"}

// benchDefaultScenarios run when none is named.
var benchDefaultScenarios = benchScenarios[:3]

// benchOptions are `herald bench`'s flags.
type benchOptions struct {
	n           int           // personalised, relay, replicas: users, one token and one event each
	processes   int           // replicas: Herald processes in the fleet
	tokens      int           // broadcast: tokens
	duration    time.Duration // latency: how long events are raised
	rate        int           // latency: events per second
	txSize      int           // personalised: events per host transaction
	writers     int           // personalised: host goroutines raising at once
	fcmLatency  time.Duration // the fake's added latency
	inFlight    int           // Herald's Sender.MaxInFlight (and the baseline's bound)
	inFlightSet bool          // -inflight was given (backlog: else Herald's adaptive default)
	rateLimit   int           // Herald's Sender.RatePerMinute; 0 means Herald's default
	timeout     time.Duration // per scenario, from the first commit
	baseline    bool          // personalised: measure the SDK baseline too
	inProcess   bool          // run the fake FCM in this process
	cpuProfile  string
	memProfile  string
	pgStats     bool    // report Postgres's top statements per scenario
	pgLog       string  // save the Postgres server log here at exit
	timeline    bool    // print the relay's lag per second of raising
	telemetry   string  // off, on, or both (each scenario runs off, on, on, off)
	sample      float64 // with telemetry: the fraction of raises traced
	verbose     bool
}

// benchResult is one scenario's line of output.
type benchResult struct {
	Scenario string `json:"scenario"`
	// Telemetry is "on" when Herald ran with OpenTelemetry SDK providers
	// exporting every metric and span to a discarded sink (-telemetry),
	// "off" (no-op providers) otherwise.
	Telemetry string `json:"telemetry"`
	// TraceSample is the fraction of raises traced when Telemetry is on
	// (the pushes of an untraced raise start no span).
	TraceSample float64 `json:"trace_sample,omitempty"`
	// Deliveries is how many pushes were committed (one per device).
	Deliveries int `json:"deliveries"`
	// Seconds runs from the first commit until FCM accepted the last
	// committed push.
	Seconds             float64 `json:"seconds"`
	DeliveriesPerSecond float64 `json:"deliveries_per_second"`
	// BaselinePerSecond and Ratio (Herald / baseline) are null when no
	// baseline was measured.
	BaselinePerSecond *float64 `json:"baseline_per_second"`
	Ratio             *float64 `json:"ratio"`
	// PeakRSSBytes is this process's peak resident set during the scenario
	// (VmHWM, reset before it), the fake FCM excluded unless in-process.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	// P50Ms, P99Ms and MaxMs are commit-to-FCM-receipt latencies.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// Lost counts committed pushes FCM never accepted; Duplicates counts
	// extra accepts of a push.
	Lost       int   `json:"lost"`
	Duplicates int64 `json:"duplicates"`
	// Accepted is every push FCM accepted; Unexpected those to tokens the
	// scenario did not commit to; Mismatched those whose content belonged
	// to another device.
	Accepted   int64 `json:"accepted"`
	Unexpected int64 `json:"unexpected"`
	Mismatched int64 `json:"mismatched"`
	// SentRecorded is how many deliveries Postgres holds as sent at the end.
	SentRecorded int `json:"sent_recorded"`
	// Connections is how many TCP connections Herald opened to FCM.
	Connections int64 `json:"connections"`
	Requests    int64 `json:"requests"`
	// MaxPerSecondWindow is the most pushes FCM accepted in any one second
	// (sliding window, 10ms steps).
	MaxPerSecondWindow int64 `json:"max_per_second_window"`
	// RateLimit is Herald's Sender.RatePerMinute.
	RateLimit int `json:"rate_limit"`
	// RateLimitExcess is MaxPerSecondWindow / (RateLimit/60) - 1: at most
	// 0.05 is within target; negative when the limit did not bind.
	RateLimitExcess float64 `json:"rate_limit_excess"`
	InFlight        int     `json:"in_flight"`
	FCMLatencyMs    float64 `json:"fcm_latency_ms"`
	// RaiseSeconds runs from the first commit to the last.
	RaiseSeconds float64 `json:"raise_seconds"`
	// CPU used during the measured phase by this process (Herald and the
	// host code raising events), the fake FCM and Postgres.
	HeraldCPUSeconds   float64 `json:"herald_cpu_seconds"`
	FakeCPUSeconds     float64 `json:"fake_cpu_seconds"`
	PostgresCPUSeconds float64 `json:"postgres_cpu_seconds"`
	// Complete is false when the scenario timed out before every
	// committed push was accepted.
	Complete bool `json:"complete"`
	// HeraldInFlightAvg and HeraldInFlightMax sample (every 10ms) the
	// deliveries Herald has claimed and not yet finished: pushes in flight
	// or waiting for the rate limiter.
	HeraldInFlightAvg float64 `json:"herald_in_flight_avg"`
	HeraldInFlightMax int64   `json:"herald_in_flight_max"`
	// RelayP50Ms and RelayP99Ms split the latency: from Raise (the
	// notification's created_at) to the relay creating the delivery row.
	RelayP50Ms float64 `json:"relay_p50_ms"`
	RelayP99Ms float64 `json:"relay_p99_ms"`
	// LoadAverage is the machine's one-minute load average at the end:
	// other work on the machine competes for its CPUs.
	LoadAverage float64 `json:"load_average"`
	// Statements are Postgres's busiest statements during the measured
	// phase, with -pgstats.
	Statements []benchStatement `json:"postgres_statements,omitempty"`
	// PostgresWork is every statement's work per delivery (buffers, WAL),
	// with -pgstats.
	PostgresWork *benchPostgresWork `json:"postgres_work_per_delivery,omitempty"`
	// ClientStatements are the same seen from the bench process's pool
	// (statement round trip plus decoding, and waits for a connection),
	// with -pgstats.
	ClientStatements []benchClientStatement `json:"client_statements,omitempty"`

	Baseline *baselineResult `json:"baseline,omitempty"`

	Fake            string `json:"fake"`
	GoVersion       string `json:"go_version"`
	CPUs            int    `json:"cpus"`
	GOMAXPROCS      int    `json:"gomaxprocs"`
	PostgresVersion string `json:"postgres_version"`
}

// baselineResult is the same pushes sent straight through the SDK.
type baselineResult struct {
	Seconds      float64 `json:"seconds"`
	PerSecond    float64 `json:"per_second"`
	Connections  int64   `json:"connections"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	Errors       int64   `json:"errors"`
	Lost         int     `json:"lost"`
	Duplicates   int64   `json:"duplicates"`
	// CPUSeconds is this process's CPU time during the baseline (the SDK),
	// FakeCPUSeconds the fake FCM's.
	CPUSeconds     float64 `json:"cpu_seconds"`
	FakeCPUSeconds float64 `json:"fake_cpu_seconds"`
}

// Run is `herald bench [scenario...] [flags]`.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, names, err := parseBenchArgs(args, stderr)
	if err != nil {
		return err
	}
	// The fake's process writes to stderr too.
	stderr = &cli.LockedWriter{W: stderr}
	level := slog.LevelWarn
	if opts.verbose {
		level = slog.LevelInfo
	}
	b := &bench{opts: opts, stderr: stderr, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	if err := b.open(ctx); err != nil {
		return err
	}
	defer b.close()

	enc := json.NewEncoder(stdout)
	for _, name := range names {
		// relay and replicas measure other things; the delivery scenarios
		// run once per telemetry setting (-telemetry).
		runs := telemetryRuns(opts.telemetry)
		if slices.Contains([]string{"relay", "replicas", "latency-sweep", "backlog"}, name) {
			runs = runs[:1]
		}
		for _, on := range runs {
			var res any
			var err error
			switch name {
			case "relay":
				res, err = b.relay(ctx)
			case "replicas":
				res, err = b.replicas(ctx)
			case "latency-sweep":
				res, err = b.latencySweep(ctx)
			case "backlog":
				res, err = b.backlog(ctx)
			default:
				res, err = b.run(ctx, name, len(names) > 1, on)
			}
			if err != nil {
				return fmt.Errorf("bench %s: %w", name, err)
			}
			if err := enc.Encode(res); err != nil {
				return err
			}
		}
	}
	return nil
}

func parseBenchArgs(args []string, stderr io.Writer) (benchOptions, []string, error) {
	var o benchOptions
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: herald bench [%s ...] [flags]\n\n", strings.Join(benchScenarios, " | "))
		fmt.Fprintln(stderr, "Runs each scenario (default: the first three) against a fake FCM on a throwaway Postgres and")
		fmt.Fprintln(stderr, "prints one JSON object per scenario on stdout; progress goes to stderr.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	fs.IntVar(&o.n, "n", 100_000, "personalised, replicas, latency-sweep (per latency): users, one token and one personalised event each; relay: deliveries")
	fs.IntVar(&o.processes, "processes", 3, "replicas: Herald processes sharing the backlog (after the same backlog sent by one)")
	fs.IntVar(&o.tokens, "tokens", 1_000_000, "broadcast: registered tokens the broadcast reaches")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "latency: how long events are raised")
	fs.IntVar(&o.rate, "rate", 200, "latency: events per second, one per transaction")
	fs.IntVar(&o.txSize, "tx-size", 1000, "personalised: events per host transaction")
	fs.IntVar(&o.writers, "writers", 1, "personalised: host goroutines committing transactions at once")
	fs.DurationVar(&o.fcmLatency, "latency", 20*time.Millisecond, "latency the fake FCM adds to every request (latency-sweep sets its own)")
	fs.IntVar(&o.inFlight, "inflight", 128, "Herald's Sender.MaxInFlight, and the baseline's in-flight bound (backlog: unset unless given, so adaptive)")
	fs.IntVar(&o.rateLimit, "rate-limit", 0, "Herald's Sender.RatePerMinute (default: Herald's, 600000)")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up on a scenario this long after its first commit")
	fs.BoolVar(&o.baseline, "baseline", true, "personalised: also send the same pushes straight through the SDK")
	fs.BoolVar(&o.inProcess, "inprocess", false, "run the fake FCM in this process (default: a child process)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of each scenario's measured phase to `file` (.<scenario> appended when several run; the baseline's to `file`.baseline)")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile at the end of each scenario's measured phase to `file`")
	fs.BoolVar(&o.pgStats, "pgstats", false, "report each scenario's top statements, server side (pg_stat_statements) and client side; log plans of statements over 40ms (auto_explain)")
	fs.StringVar(&o.pgLog, "pglog", "", "save the Postgres server log (with -pgstats: slow plans) to `file` at exit")
	fs.BoolVar(&o.timeline, "timeline", false, "print, per second of raising, the relay's lag from raise to delivery row (stderr)")
	fs.StringVar(&o.telemetry, "telemetry", telemetryOff, "Herald's OpenTelemetry: off (no-op providers), on (SDK providers exporting every metric and span to a discarded sink), or both (each scenario runs off, on, on, off)")
	fs.Float64Var(&o.sample, "trace-sample", 1, "with -telemetry: the fraction of raises traced (a parent-based ratio sampler; 1 traces every raise, relay and push)")
	fs.BoolVar(&o.verbose, "v", false, "log Herald at info level on stderr (default: warnings)")

	var names []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return o, nil, cli.UsageError{Msg: "help requested"}
			}
			return o, nil, cli.UsageError{Msg: err.Error()}
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if !slices.Contains(benchScenarios, rest[0]) {
			return o, nil, cli.UsageError{Msg: fmt.Sprintf("unknown scenario %q (want %s)", rest[0], strings.Join(benchScenarios, ", "))}
		}
		names = append(names, rest[0])
		rest = rest[1:]
	}
	if len(names) == 0 {
		names = benchDefaultScenarios
	}
	fs.Visit(func(f *flag.Flag) { o.inFlightSet = o.inFlightSet || f.Name == "inflight" })
	var problems []string
	for name, v := range map[string]int{"-n": o.n, "-tokens": o.tokens, "-rate": o.rate, "-tx-size": o.txSize,
		"-writers": o.writers, "-inflight": o.inFlight, "-processes": o.processes} {
		if v <= 0 {
			problems = append(problems, name+" must be positive")
		}
	}
	if o.rateLimit < 0 || o.fcmLatency < 0 || o.duration <= 0 || o.timeout <= 0 {
		problems = append(problems, "-rate-limit and -latency must not be negative; -duration and -timeout must be positive")
	}
	if o.sample < 0 || o.sample > 1 {
		problems = append(problems, "-trace-sample must be between 0 and 1")
	}
	if !slices.Contains([]string{telemetryOff, telemetryOn, telemetryBoth}, o.telemetry) {
		problems = append(problems, "-telemetry must be off, on or both")
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return o, nil, cli.UsageError{Msg: strings.Join(problems, "; ")}
	}
	return o, names, nil
}

// bench holds what every scenario shares: a throwaway Postgres cluster
// (each scenario gets a fresh database on it) and the fake FCM.
type bench struct {
	opts    benchOptions
	stderr  io.Writer
	log     *slog.Logger
	cluster *pgcluster.Cluster
	admin   *pgxpool.Pool
	fake    benchFake
	pgVer   string
	tracer  *benchTracer // with -pgstats
}

func (b *bench) progressf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench: "+format+"\n", args...)
}

func (b *bench) open(ctx context.Context) error {
	b.progressf("starting a throwaway postgres")
	// Always embedded, whatever DATABASE_URL says: the bench creates and
	// drops databases and must not touch a real one.
	var settings map[string]string
	if b.opts.pgStats {
		settings = map[string]string{"shared_preload_libraries": "pg_stat_statements,auto_explain", "pg_stat_statements.track": "all", "pg_stat_statements.track_planning": "on",
			"auto_explain.log_min_duration": "40ms", "auto_explain.log_analyze": "on", "auto_explain.log_buffers": "on", "auto_explain.log_nested_statements": "on"}
	}
	cluster, err := pgcluster.Start(ctx, pgcluster.Config{Settings: settings})
	if err != nil {
		return fmt.Errorf("start throwaway postgres: %w", err)
	}
	b.cluster = cluster
	if b.admin, err = pgxpool.New(ctx, cluster.URL("postgres")); err != nil {
		b.close()
		return fmt.Errorf("connect to throwaway postgres: %w", err)
	}
	if err := b.admin.QueryRow(ctx, `SHOW server_version`).Scan(&b.pgVer); err != nil {
		b.close()
		return fmt.Errorf("postgres version: %w", err)
	}
	if b.opts.pgStats {
		if _, err := b.admin.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
			b.close()
			return fmt.Errorf("pg_stat_statements: %w", err)
		}
	}
	mode := "a child process"
	if b.opts.inProcess {
		mode = "this process"
	}
	b.progressf("starting the fake fcm in %s (%s latency)", mode, b.opts.fcmLatency)
	if b.fake, err = startBenchFake(ctx, b.opts.inProcess, b.opts.fcmLatency, b.stderr); err != nil {
		b.close()
		return err
	}
	return nil
}

func (b *bench) close() {
	if b.opts.pgLog != "" && b.cluster != nil {
		if err := copyFile(b.opts.pgLog, b.cluster.LogPath()); err != nil {
			b.log.Warn("save postgres log", "err", err)
		}
	}
	if b.fake != nil {
		if err := b.fake.close(); err != nil {
			b.log.Warn("stop fake fcm", "err", err)
		}
	}
	if b.admin != nil {
		b.admin.Close()
	}
	if b.cluster != nil {
		if err := b.cluster.Stop(); err != nil {
			b.log.Warn("stop throwaway postgres", "err", err)
		}
	}
}

// newDatabase creates and migrates a database for one scenario and returns
// a pool on it and a function that closes the pool and drops the database.
func (b *bench) newDatabase(ctx context.Context, name string) (*pgxpool.Pool, func(), error) {
	db := "bench_" + name
	ident := pgx.Identifier{db}.Sanitize()
	if _, err := b.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+ident+` WITH (FORCE)`); err != nil {
		return nil, nil, fmt.Errorf("drop database: %w", err)
	}
	if _, err := b.admin.Exec(ctx, `CREATE DATABASE `+ident); err != nil {
		return nil, nil, fmt.Errorf("create database: %w", err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := b.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+ident+` WITH (FORCE)`); err != nil {
			b.log.Warn("drop bench database", "database", db, "err", err)
		}
	}
	cfg, err := pgxpool.ParseConfig(b.cluster.URL(db))
	if err != nil {
		drop()
		return nil, nil, err
	}
	cfg.MaxConns = int32(max(20, b.opts.writers+10))
	if b.opts.pgStats {
		if b.tracer == nil {
			b.tracer = newBenchTracer()
		}
		cfg.ConnConfig.Tracer = b.tracer
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		drop()
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	if _, err := migrations.Up(ctx, pool); err != nil {
		pool.Close()
		drop()
		return nil, nil, fmt.Errorf("migrate: %w", err)
	}
	return pool, func() { pool.Close(); drop() }, nil
}

// dataDir is the cluster's data directory (the server log lives in it).
func (b *bench) dataDir() string { return filepath.Dir(b.cluster.LogPath()) }

// run runs one scenario on a fresh database.
func (b *bench) run(ctx context.Context, name string, several, telemetry bool) (*benchResult, error) {
	pool, drop, err := b.newDatabase(ctx, name)
	if err != nil {
		return nil, err
	}
	defer drop()
	var sc *benchScenario
	switch name {
	case "personalised":
		sc = benchPersonalisedScenario(b.opts)
	case "broadcast":
		sc = benchBroadcastScenario(b.opts)
	case "latency":
		sc = benchLatencyScenario(b.opts)
	default:
		return nil, fmt.Errorf("unknown scenario %q", name)
	}
	profile := b.opts.cpuProfile
	memProfile := b.opts.memProfile
	if several {
		if profile != "" {
			profile += "." + name
		}
		if memProfile != "" {
			memProfile += "." + name
		}
	}
	var tel *benchTelemetry
	if telemetry {
		if tel, err = newBenchTelemetry(b.opts.sample); err != nil {
			return nil, err
		}
	}
	res, err := b.measure(ctx, pool, sc, profile, memProfile, tel)
	if shutdownErr := tel.shutdown(); shutdownErr != nil {
		b.log.Warn("stop telemetry", "err", shutdownErr)
	}
	if err != nil {
		return nil, err
	}
	res.Telemetry = telemetryOff
	if telemetry {
		res.Telemetry, res.TraceSample = telemetryOn, b.opts.sample
	}
	res.Fake = b.fake.mode()
	res.GoVersion = runtime.Version()
	res.CPUs = runtime.NumCPU()
	res.GOMAXPROCS = runtime.GOMAXPROCS(0)
	res.PostgresVersion = b.pgVer
	res.InFlight = b.opts.inFlight
	res.FCMLatencyMs = float64(b.opts.fcmLatency) / float64(time.Millisecond)
	return res, nil
}

// copyFile copies the file at src to dst.
func copyFile(dst, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}
