package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/internal/backlog"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/internal/pgcluster"
	"github.com/herald-push/herald/migrations"
	"github.com/herald-push/herald/notification"
)

// Application names of the scenario's connections, so that
// connection-cut finds them in pg_stat_activity.
const (
	chaosAppAdmin  = "herald-chaos-admin"  // the scenario's own checks
	chaosAppHost   = "herald-chaos-host"   // the host application's transactions
	chaosAppHerald = "herald-chaos-herald" // Herald running in this process
	chaosAppWorker = "herald-chaos-worker" // Herald running in a chaos-worker process
)

// chaosFakeLatency is the fake FCM's round trip: loopback is faster than
// real FCM, and some latency keeps pushes in flight long enough to be hit.
const chaosFakeLatency = 10 * time.Millisecond

// chaosTuning is what varies in Herald's configuration between scenarios.
// It travels to chaos-worker processes as JSON.
type chaosTuning struct {
	MaxInFlight int           `json:"max_in_flight"`
	BatchSize   int           `json:"batch_size"`
	Lease       time.Duration `json:"lease"`
	SendTimeout time.Duration `json:"send_timeout"`
	// RatePerMinute is SenderConfig's; zero means its default (600,000).
	RatePerMinute int `json:"rate_per_minute"`
	// LongTransactionWarning is RelayConfig's; zero means its default (5s).
	LongTransactionWarning time.Duration `json:"long_transaction_warning"`
	// ProductionBreaker keeps FCMSenderConfig's production defaults for the
	// send timeout and the circuit breaker (20 s, 5 failures, open 10 s,
	// 3 probes) instead of the shortened ones, so that the SDK's own
	// retries run as in production (fcm-outage).
	ProductionBreaker bool `json:"production_breaker"`
	// ClockOffset is added to every clock of Herald's (the sender's, the
	// relay's, the raiser's, broadcasts' and housekeeping's): a process whose
	// clock is wrong. A worker reads it from HERALD_CHAOS_CLOCK_OFFSET.
	ClockOffset time.Duration `json:"-"`
	Verbose     bool          `json:"verbose"`
}

func defaultChaosTuning() chaosTuning {
	return chaosTuning{MaxInFlight: 32, BatchSize: 32, Lease: 5 * time.Second, SendTimeout: time.Second}
}

// heraldConfig is production behaviour with every delay shortened, so that
// leases expire, the breaker probes and retries come due within seconds.
// The retry budget (25 attempts, 200ms to 2s apart) outlasts the longest
// outage injected; production's default (12 attempts from 10s to 1h apart)
// outlasts hours.
func (t chaosTuning) heraldConfig(log *slog.Logger) herald.Config {
	cfg := herald.Config{
		Logger: log,
		Relay:  herald.RelayConfig{PollInterval: 25 * time.Millisecond},
		Sender: herald.SenderConfig{
			MaxInFlight:      t.MaxInFlight,
			RatePerMinute:    t.RatePerMinute,
			BatchSize:        t.BatchSize,
			Lease:            t.Lease,
			PollInterval:     50 * time.Millisecond,
			Retry:            notification.RetryPolicy{MaxAttempts: 25, BaseDelay: 200 * time.Millisecond, MaxDelay: 2 * time.Second},
			CircuitOpenPause: 200 * time.Millisecond,
			QuotaPause:       time.Second,
		},
		FCM: herald.FCMConfig{
			SendTimeout:     t.SendTimeout,
			BreakerFailures: 5,
			BreakerOpenFor:  time.Second,
			BreakerProbes:   3,
		},
	}
	cfg.Relay.LongTransactionWarning = t.LongTransactionWarning
	if t.ProductionBreaker {
		cfg.FCM = herald.FCMConfig{}
	}
	if t.ClockOffset != 0 {
		offset := t.ClockOffset
		now := func() time.Time { return time.Now().Add(offset) }
		cfg.Now = now
	}
	return cfg
}

// chaosRules are the host application's rules: the worked example, and
// chaosScored (poison raises one that cannot be encoded), and chaosFeature
// (scheduled and collapsing notifications, under sigkill).
func chaosRules() *notification.Rules {
	rules := notification.NewRules()
	if err := errors.Join(
		notification.On(rules, notification.NotifyCourseAuthor),
		notification.On(rules, notifyScored),
		notification.On(rules, notifyFeature),
	); err != nil {
		panic("chaos rules: " + err.Error()) // a fresh rule set cannot already have them
	}
	return rules
}

// chaosScored is a host event with a float field: a NaN in it cannot be
// encoded as JSON.
type chaosScored struct {
	UserID string  `json:"user_id"`
	Score  float64 `json:"score"`
}

// EventType names the event in the outbox.
func (chaosScored) EventType() string { return "chaos_scored" }

func notifyScored(e chaosScored) ([]notification.Draft, error) {
	return []notification.Draft{{Recipient: e.UserID, Type: "chaos_scored",
		Content: notification.Content{Title: "New score", Body: "Your course has a new score"}}}, nil
}

// chaosEnv is one scenario's world: its own Postgres cluster (durable
// commits, unlike the test default, so that an immediate restart loses
// nothing acknowledged), a pool for the host application and one for
// checks, and an in-process fake FCM whose every accepted push is counted.
type chaosEnv struct {
	name    string
	opts    chaosOptions
	rng     *rand.Rand // the scenario goroutine's only
	began   time.Time
	cluster *pgcluster.Cluster
	dbURL   string
	admin   *pgxpool.Pool
	host    *pgxpool.Pool
	fake    *fakefcm.Server
	pushes  *chaosPushCounter
	logs    *chaosLogCapture
	log     *slog.Logger // Herald's logs: stderr and the capture
	closers []func()
}

func openChaosEnv(ctx context.Context, name string, opts chaosOptions, seed int64) (e *chaosEnv, err error) {
	e = &chaosEnv{name: name, opts: opts, rng: rand.New(rand.NewPCG(uint64(seed), 0x6865726c)), began: time.Now()}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	level := slog.LevelWarn
	if opts.verbose {
		level = slog.LevelInfo
	}
	e.logs = &chaosLogCapture{next: slog.NewTextHandler(opts.stderr, &slog.HandlerOptions{Level: level}), store: &chaosLogStore{}}
	e.log = slog.New(e.logs).With("scenario", name)

	e.progress("starting a throwaway postgres")
	e.cluster, err = pgcluster.Start(ctx, pgcluster.Config{Settings: map[string]string{
		// The test default (off) acknowledges commits an immediate
		// shutdown then forgets: a push for a transaction that no longer
		// exists. Production runs with it on.
		"synchronous_commit": "on",
		// At wal_level replica (the default) an ACCESS EXCLUSIVE lock is
		// logged for standbys, which gives its transaction an id, and that
		// hides every later event from the relay: connection-cut's lock
		// meant to catch the relay mid-expansion then caught nothing.
		"wal_level":       "minimal",
		"max_wal_senders": "0",
		// connection-cut recognises the relay's expansion in
		// pg_stat_activity by its INSERT, past the default 1,024 bytes of
		// query text since the expansion learnt preferences and quiet hours.
		"track_activity_query_size": "8192",
	}})
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	e.closers = append(e.closers, func() {
		if err := e.cluster.Stop(); err != nil {
			e.progress("stop postgres: %v", err)
		}
	})
	e.progress("postgres %d up", e.cluster.Port())
	e.dbURL = e.cluster.URL("postgres")
	if e.admin, err = e.newPool(ctx, chaosAppAdmin, 4); err != nil {
		return nil, err
	}
	if _, err := migrations.Up(ctx, e.admin); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if e.host, err = e.newPool(ctx, chaosAppHost, 10); err != nil {
		return nil, err
	}
	e.pushes = newChaosPushCounter()
	e.fake, err = fakefcm.Start(fakefcm.Config{
		Latency: chaosFakeLatency, DontRecord: true, OnAccept: e.pushes.accept,
	})
	if err != nil {
		return nil, fmt.Errorf("start fake fcm: %w", err)
	}
	e.closers = append(e.closers, e.fake.Close)
	return e, nil
}

// close releases everything, newest first.
func (e *chaosEnv) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
}

// poolURL is the database URL with an application name.
func (e *chaosEnv) poolURL(appName string) string {
	return e.dbURL + "&application_name=" + url.QueryEscape(appName)
}

// newPool connects a pool named appName in pg_stat_activity; close closes it.
func (e *chaosEnv) newPool(ctx context.Context, appName string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(e.poolURL(appName))
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", appName, err)
	}
	e.closers = append(e.closers, pool.Close)
	return pool, nil
}

// progress prints a line on stderr, timed from the scenario's start.
func (e *chaosEnv) progress(format string, args ...any) {
	fmt.Fprintf(e.opts.stderr, "chaos %-16s %6.1fs  %s\n", e.name, time.Since(e.began).Seconds(), fmt.Sprintf(format, args...))
}

// jitter returns a random duration in [lo, hi).
func (e *chaosEnv) jitter(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(e.rng.Int64N(int64(hi-lo)))
}

// drainTimeout bounds how long a scenario waits for Herald to finish after
// the faults end: generous, it is a deadline, not a measurement.
func (e *chaosEnv) drainTimeout() time.Duration {
	return chaosSize(e.opts, 2*time.Minute, 5*time.Minute)
}

// waitIdle waits until Herald has relayed every committed event and every
// delivery is final (backlog.Idle), printing progress. Database errors
// (Postgres restarting) are waited out until the deadline.
func (e *chaosEnv) waitIdle(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	lastReport := time.Now()
	var lastErr error
	for {
		idle, err := backlog.Idle(ctx, e.admin)
		if err == nil && idle {
			return nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("herald still busy after %s: %s (last error: %v)", within, e.openWork(ctx), lastErr)
		}
		if time.Since(lastReport) >= 5*time.Second {
			e.progress("draining: %d pushes received; %s", e.pushes.total(), e.openWork(ctx))
			lastReport = time.Now()
		}
		if !cli.Sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// openWork describes the deliveries not final yet.
func (e *chaosEnv) openWork(ctx context.Context) string {
	counts, err := adapters.NewPostgresDeliveryRepository(e.admin).CountByStatus(ctx)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d pending, %d claimed, %d retry scheduled",
		counts[notification.StatusPending], counts[notification.StatusClaimed], counts[notification.StatusRetryScheduled])
}

// chaosHerald is Herald running in this process.
type chaosHerald struct {
	*herald.Herald
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// newHerald makes Herald in this process, on a pool of its own, without
// running it: it can raise events until start is called.
func (e *chaosEnv) newHerald(ctx context.Context, tuning chaosTuning) (*chaosHerald, error) {
	pool, err := e.newPool(ctx, chaosAppHerald, 10)
	if err != nil {
		return nil, err
	}
	fcm, err := herald.NewFCM(ctx, e.fake.ProjectID(), e.fake.ClientOptions()...)
	if err != nil {
		return nil, err
	}
	h, err := herald.New(pool, fcm, chaosRules(), tuning.heraldConfig(e.log))
	if err != nil {
		return nil, err
	}
	ch := &chaosHerald{Herald: h, cancel: func() {}, done: make(chan struct{})}
	close(ch.done) // not running yet
	e.closers = append(e.closers, func() { _ = ch.stop() })
	return ch, nil
}

// start runs Herald until stop is called.
func (h *chaosHerald) start(ctx context.Context) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	h.cancel, h.done = cancel, done
	go func() {
		defer close(done)
		h.err = h.Run(runCtx)
	}()
}

// stop ends Run and waits for it: pushes in flight finish and are recorded.
func (h *chaosHerald) stop() error {
	h.cancel()
	<-h.done
	return h.err
}

// stopped reports whether Run has returned on its own.
func (h *chaosHerald) stopped() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// chaosLogCapture is a slog handler that passes records on and keeps the
// warnings and errors (at most a thousand) for the scenario to inspect. Its
// store is shared by the handlers derived from it.
type chaosLogCapture struct {
	next  slog.Handler
	attrs []slog.Attr
	store *chaosLogStore
}

type chaosLogStore struct {
	mu      sync.Mutex
	records []chaosLogRecord
}

// chaosLogRecord is one warning or error: its message and attributes.
type chaosLogRecord struct {
	Level   slog.Level
	Message string
	Attrs   map[string]slog.Value
}

const chaosMaxLogs = 1000

func (h *chaosLogCapture) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *chaosLogCapture) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.keep(r)
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *chaosLogCapture) keep(r slog.Record) {
	c := chaosLogRecord{Level: r.Level, Message: r.Message, Attrs: map[string]slog.Value{}}
	for _, a := range h.attrs {
		c.Attrs[a.Key] = a.Value.Resolve()
	}
	r.Attrs(func(a slog.Attr) bool {
		c.Attrs[a.Key] = a.Value.Resolve()
		return true
	})
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	if len(h.store.records) < chaosMaxLogs {
		h.store.records = append(h.store.records, c)
	}
}

func (h *chaosLogCapture) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &chaosLogCapture{next: h.next.WithAttrs(attrs), attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], attrs...), store: h.store}
}

// WithGroup keeps the group for output; captured attributes stay flat.
func (h *chaosLogCapture) WithGroup(name string) slog.Handler {
	return &chaosLogCapture{next: h.next.WithGroup(name), attrs: h.attrs, store: h.store}
}

// warnings returns the captured warnings and errors so far.
func (h *chaosLogCapture) warnings() []chaosLogRecord {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	return append([]chaosLogRecord(nil), h.store.records...)
}

// errChaosHeraldStopped is returned when Herald's Run returned during a scenario.
var errChaosHeraldStopped = errors.New("herald's Run returned during the scenario")
