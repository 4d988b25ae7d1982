package app

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/herald-push/herald/internal/backoff"
	"github.com/herald-push/herald/internal/settings"
	"github.com/herald-push/herald/internal/telemetry"
	"github.com/herald-push/herald/notification"
)

// Dispatch is a claimed delivery with the message to push.
type Dispatch struct {
	Delivery *notification.Delivery
	Message  notification.Message
	// TraceParent is the W3C traceparent of the span that raised the
	// notification, if it was traced: the push's span links to it.
	TraceParent string
	// SendAt is when the host scheduled the notification for
	// (notification.Draft.SendAt), zero if it was to go at once: its
	// latency is measured from then, not from the raise.
	SendAt time.Time
	// ExpiresAt is when the notification expires in the clock of the
	// claim's caller (its now plus what remained by the store's clock),
	// zero if the store did not say: then Message.ExpiresAt is used.
	ExpiresAt time.Time

	// claimed is when (Go's monotonic clock) the sender started the claim
	// that returned it, zero if unknown: its lease is measured from then
	// as well as on the sender's clock, which may be stepped back.
	claimed time.Time
}

// expired reports whether d's notification has expired at now (the
// sender's clock): by what the store said remained at the claim, so that a
// sender whose clock is off neither drops a push early nor pushes one late.
func (d Dispatch) expired(now time.Time) bool {
	if !d.ExpiresAt.IsZero() {
		return !now.Before(d.ExpiresAt)
	}
	return d.Message.Expired(now)
}

// DeliveryStore is the sender's view of stored deliveries.
type DeliveryStore interface {
	// ClaimDue leases up to limit due deliveries (pending, retry scheduled,
	// or claimed with an expired lease) for lease under one claim id, in one
	// short transaction, and returns them with their messages. Two senders
	// never receive the same delivery for the same lease. The store's clock
	// (the database's) decides what is due and when leases end, so senders'
	// clocks may disagree; now is the caller's clock at the claim, and the
	// returned deliveries' DueAt (their lease end) is now+lease in that
	// clock. A delivery whose token no longer belongs to its recipient is
	// closed (token_moved or token_pruned), never returned.
	ClaimDue(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]Dispatch, error)
	// Record saves the new state of claimed deliveries in one short
	// transaction and, for deliveries whose token was pruned, deletes the
	// token in that same transaction. A delivery whose claim is no longer
	// current (its lease expired and another sender claimed it, or its
	// token moved to another user) is left alone. A delivery due again is
	// due after DueAt-UpdatedAt (the delay, in the caller's clock) on the
	// store's clock. It returns how many deliveries were recorded.
	Record(ctx context.Context, ds []*notification.Delivery) (int, error)
	// StillClaimed reports whether d's claim is still current: nobody
	// closed the delivery since it was claimed (its token moved to another
	// user or left the registry), its lease was not taken over, and its
	// notification was neither superseded nor cancelled meanwhile, and its
	// token still belongs to its recipient (a broadcast's: still registered
	// on one of its platforms).
	StillClaimed(ctx context.Context, d *notification.Delivery) (bool, error)
}

// Pusher sends one message to the push provider. A failure is a
// *notification.SendError whose Class says what happened; Pusher
// implementations classify the provider's errors and own the circuit breaker
// (returning notification.ErrCircuitOpen without calling the provider).
type Pusher interface {
	Push(ctx context.Context, msg notification.Message) (messageName string, err error)
}

// TimedPusher is a Pusher that says how long one push may take at most.
// A Sender starts a push only while that much of its lease remains, plus
// time to record the outcome, so that no other sender can take the
// delivery over while it is in flight.
type TimedPusher interface {
	Pusher
	PushTimeout() time.Duration
}

// SendBudget is the send budget shared by every instance of a fleet (see
// FleetBudget): RatePerMinute across all of them, and the pause after a
// project-wide QUOTA_EXCEEDED seen by any of them.
type SendBudget interface {
	// Take takes one push from the budget, blocking until it is granted.
	// A positive pause means all sending waits that long and nothing was
	// taken. It returns an error only when ctx ends.
	Take(ctx context.Context) (pause time.Duration, err error)
	// PauseAll pauses every instance's pushes for d.
	PauseAll(d time.Duration)
}

// LiveBudget is a SendBudget that knows whether this instance still counts
// as alive to the fleet (FleetBudget, from Membership.Live). While it does
// not, a Sender claims nothing: the fleet may take it for dead and free
// whatever it claims, and a claim made just before the instance is reaped,
// pushed just after its heartbeat registers it again, is pushed by another
// instance too.
type LiveBudget interface {
	SendBudget
	Live() bool
}

// StrainCounter is a Pusher that counts the attempts FCM answered with a
// 5xx, its client's own retries included (the firebase SDK retries a 503
// by itself, so Push seldom returns one). A Sender with adaptive
// concurrency backs off when the count grows.
type StrainCounter interface {
	Pusher
	StrainedAttempts() int64
}

// recordRoundTrip is the least time a sender keeps for the recorder to
// write a push's outcome, and what it takes one batch to need until it has
// measured one.
const recordRoundTrip = 500 * time.Millisecond

// recordMargin is the least time a sender keeps, on top of a push's
// timeout, to record its outcome before the lease ends: a flush interval
// and a round trip to the database.
func recordMargin(flush time.Duration) time.Duration { return flush + recordRoundTrip }

// LeaseFloor is how much of its lease a claimed delivery needs left for its
// push to start: the push's timeout and the time to record its outcome
// (with FlushInterval flush). A Lease no longer than this lets no push
// start: every claim would be given back at once.
func LeaseFloor(pushTimeout, flush time.Duration) time.Duration {
	return pushTimeout + recordMargin(flush)
}

// SenderConfig configures a Sender. Zero values mean defaults. Each
// setting is documented, with its default, on herald.SenderConfig, which
// hosts set; only the fields herald.Config does not map are documented here.
type SenderConfig struct {
	MaxInFlight, InFlightCeiling, BatchSize, RatePerMinute         int
	Lease, PollInterval, FlushInterval                             time.Duration
	Retry                                                          notification.RetryPolicy
	CircuitOpenPause, QuotaPause                                   time.Duration
	QuotaDevices                                                   int
	QuotaWindow, PlatformPause, PlatformMaxPause, AlarmLogInterval time.Duration
	// DevicePerMinute and DevicePerHour are the per-device limits the
	// store's claims apply (see herald.SenderConfig); the Sender only
	// carries them. Negative turns a limit off.
	DevicePerMinute, DevicePerHour int
	// Logger receives the sender's logs. Tokens and message bodies are never
	// logged. Defaults to discarding.
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Jitter returns a random number in [0, 1) for retry jitter. Defaults
	// to math/rand/v2.
	Jitter func() float64
	// Budget, when set, is the fleet's shared budget: every push takes a
	// token from it besides the local rate limiter (which then only
	// smooths this process's pushes), and a project-wide QUOTA_EXCEEDED
	// pauses the whole fleet through it. Nil: this process alone.
	Budget SendBudget
	// Telemetry receives the sender's metrics and push spans. Defaults to
	// nil, which observes nothing.
	Telemetry *telemetry.Telemetry
}

// maxQuotaDevices bounds SenderConfig.QuotaDevices: the detector keeps
// twice as many answers.
const maxQuotaDevices = 1000

// inFlightBound is the most pushes ever in flight: MaxInFlight when set,
// else InFlightCeiling (defaults applied).
func (c *SenderConfig) inFlightBound() int {
	if c.MaxInFlight > 0 {
		return c.MaxInFlight
	}
	return c.InFlightCeiling
}

func (c *SenderConfig) setDefaults() {
	// MaxInFlight stays 0: the concurrency adapts (see concurrencyRule).
	settings.Default(&c.InFlightCeiling, 2048)
	settings.Default(&c.BatchSize, 500)
	settings.Default(&c.RatePerMinute, 600_000)
	settings.Default(&c.Lease, time.Minute)
	settings.Default(&c.PollInterval, 500*time.Millisecond)
	settings.Default(&c.FlushInterval, 100*time.Millisecond)
	settings.Default(&c.Retry.MaxAttempts, 12)
	settings.Default(&c.Retry.BaseDelay, 10*time.Second)
	settings.Default(&c.Retry.MaxDelay, time.Hour)
	settings.Default(&c.CircuitOpenPause, time.Second)
	settings.Default(&c.QuotaPause, 5*time.Second)
	settings.Default(&c.QuotaDevices, 3)
	settings.Default(&c.QuotaWindow, 2*time.Second)
	settings.Default(&c.PlatformPause, 10*time.Second)
	settings.Default(&c.PlatformMaxPause, 10*time.Minute)
	c.PlatformMaxPause = max(c.PlatformMaxPause, c.PlatformPause)
	settings.Default(&c.AlarmLogInterval, 10*time.Second)
	settings.Default(&c.DevicePerMinute, 240)
	settings.Default(&c.DevicePerHour, 5000)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Jitter == nil {
		c.Jitter = rand.Float64
	}
}

// Validate reports every invalid field at once, naming each by its Go
// field name, always in the order of the fields.
func (c SenderConfig) Validate() error {
	errs := []error{
		settings.NotNegative("MaxInFlight", c.MaxInFlight),
		settings.NotNegative("InFlightCeiling", c.InFlightCeiling),
		settings.NotNegative("BatchSize", c.BatchSize),
		settings.NotNegative("RatePerMinute", c.RatePerMinute),
		settings.NotNegative("Lease", c.Lease),
		settings.NotNegative("PollInterval", c.PollInterval),
		settings.NotNegative("FlushInterval", c.FlushInterval),
		settings.NotNegative("Retry.MaxAttempts", c.Retry.MaxAttempts),
		settings.NotNegative("Retry.BaseDelay", c.Retry.BaseDelay),
		settings.NotNegative("Retry.MaxDelay", c.Retry.MaxDelay),
		settings.NotNegative("CircuitOpenPause", c.CircuitOpenPause),
		settings.NotNegative("QuotaPause", c.QuotaPause),
		settings.Check("QuotaDevices", c.QuotaDevices < 0 || c.QuotaDevices > maxQuotaDevices,
			fmt.Sprintf("must be between 0 and %d", maxQuotaDevices)),
		settings.NotNegative("QuotaWindow", c.QuotaWindow),
		settings.NotNegative("PlatformPause", c.PlatformPause),
		settings.NotNegative("PlatformMaxPause", c.PlatformMaxPause),
		settings.NotNegative("AlarmLogInterval", c.AlarmLogInterval),
	}
	if c.Retry.BaseDelay >= 0 && c.Retry.MaxDelay >= 0 {
		d := c.WithDefaults()
		if d.Retry.MaxDelay < d.Retry.BaseDelay {
			errs = append(errs, fmt.Errorf("Retry.MaxDelay (%s) must not be shorter than Retry.BaseDelay (%s)",
				d.Retry.MaxDelay, d.Retry.BaseDelay))
		}
	}
	return errors.Join(errs...)
}

// SenderStats counts what a Sender did since it was made.
type SenderStats struct {
	Claimed, Sent, TokensPruned, Failed, RetriesScheduled, Released int64
	// ConfigAlarms counts pushes FCM refused for our configuration
	// (SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR, credentials rejected).
	ConfigAlarms int64
	// QuotaExceeded counts QUOTA_EXCEEDED answers.
	QuotaExceeded int64
	// QuotaPauses counts the times all sending paused because
	// QUOTA_EXCEEDED was evidently project-wide (see
	// SenderConfig.QuotaDevices).
	QuotaPauses int64
	// PlatformPauses counts the times one platform's pushes were paused, or
	// the pause doubled, after THIRD_PARTY_AUTH_ERROR.
	PlatformPauses int64
	// ClosedBeforePush counts claimed deliveries not pushed because they
	// were closed while they waited (their token moved to another user or
	// left the registry), or whose notification expired while they waited.
	ClosedBeforePush int64
	// CircuitOpen counts pushes the circuit breaker stopped.
	CircuitOpen int64
	// InFlight is the number of pushes in flight now.
	InFlight int64
	// InFlightLimit is how many pushes may be in flight now: MaxInFlight
	// when it is set, else the adaptive limit (0 before the first Run).
	InFlightLimit int64
}

// Sender claims due deliveries, pushes them outside any database
// transaction with at most MaxInFlight in flight (or, when it is unset, as
// many as reach RatePerMinute at FCM's measured round trip, up to
// InFlightCeiling) and at most RatePerMinute a minute, and records the
// outcomes in batches. Run it in one goroutine per
// process (several processes may run one each); Wake and Stats are safe
// for concurrent use.
//
// FCM's answers that concern more than one delivery slow down only what
// they concern: a device over its rate waits alone, a platform whose APNs or
// web push credentials are rejected pauses alone, and all sending pauses
// only for a project-wide quota or an open circuit breaker (see
// SenderConfig.QuotaDevices and SenderConfig.PlatformPause). Repeated
// alarms are logged once per SenderConfig.AlarmLogInterval.
//
// A push starts only if its outcome can be recorded before its lease ends,
// so that no other claim takes the delivery over and pushes it again: with
// the push's timeout and a flush interval left besides, the recorder must be
// able to write the batch it holds and every outcome ahead of this one, at
// its measured pace per batch (see recorderRoom). While it cannot, workers
// wait without taking claims and the sender claims nothing more.
type Sender struct {
	store  DeliveryStore
	pusher Pusher
	cfg    SenderConfig
	log    *slog.Logger

	limiter    *rate.Limiter
	pauseState sendPause // sending waits until it ends
	wake       chan struct{}
	outcomes   chan *notification.Delivery
	inFlight   atomic.Int64

	// The concurrency: gate admits workers below the limit; rule, when
	// MaxInFlight is unset, moves the limit (under ruleMu).
	gate   *workerGate
	ruleMu sync.Mutex
	rule   *concurrencyRule

	running atomic.Bool
	stats   struct {
		claimed, sent, pruned, failed, retries, released, alarms, quota, circuit atomic.Int64
		quotaPauses, platformPauses, closed                                      atomic.Int64
	}

	// Reactions to answers that concern more than one delivery.
	seed  maphash.Seed // keys devices by a hash of their token
	quota *quotaDetector
	// mismatch watches SENDER_ID_MISMATCH answers as quota watches 429s:
	// on many devices and nothing else, it is this server's project that
	// is wrong, not the tokens. accepted vouches for the project: FCM has
	// accepted a push of this sender since it was made.
	mismatch  *quotaDetector
	accepted  atomic.Bool
	holds     *deviceHolds
	platforms *platformGate
	alarms    *alarmLog
	tel       *telemetry.Telemetry

	// acceptedAt is when (Now, in UnixNano) FCM last accepted a push.
	acceptedAt atomic.Int64

	// admitBefore: a claimed delivery is pushed only while at least this
	// much of its lease remains (half the lease, or the push's timeout and
	// the time to record it, whichever is longer).
	admitBefore time.Duration
	// held counts the claimed deliveries not yet through the send budget
	// (queued, or waiting for their token); passed counts those that went
	// through it. The claim loop keeps held near what this process pushes
	// in holdFor (see claimLoop).
	held, passed atomic.Int64
	// recordWithin is the part of admitBefore left to the recorder once
	// the push has had its timeout and its outcome a flush interval to
	// join a batch: a push starts only while the recorder can write every
	// outcome ahead of it and its own within that (see recorderRoom).
	recordWithin time.Duration

	// reserved counts the workers holding room at the recorder for the
	// outcome of the delivery they take next or push now (see
	// recorderRoom): taken before a worker takes a claim, given back once
	// its outcome was handed to the recorder.
	reserved atomic.Int64
	// The recorder's pace, for recorderRoom. batchTook is how long a batch
	// takes to write on the sender's clock (the longer of the last two, in
	// nanoseconds; recordRoundTrip until one was written); handSince is
	// when (UnixNano, sender's clock) the recorder took the first outcome
	// of the batch it holds, 0 while it holds none. lastTook is the
	// recorder's own. recorded wakes the workers waiting for the recorder.
	batchTook atomic.Int64
	handSince atomic.Int64
	lastTook  time.Duration
	recorded  recorderProgress
}

// NewSender returns a Sender. store and pusher must not be nil.
func NewSender(store DeliveryStore, pusher Pusher, cfg SenderConfig) (*Sender, error) {
	if store == nil || pusher == nil {
		panic("app: NewSender: nil store or pusher")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid sender config: %w", err)
	}
	cfg.setDefaults()
	perSecond := float64(cfg.RatePerMinute) / 60
	// A burst of 1% of a second's rate keeps any one-second window within
	// a few percent of the limit.
	burst := max(1, int(perSecond/100))
	log := cfg.Logger.With("component", "herald_sender")
	// A Pusher that does not say how long a push may take is taken to
	// answer at once.
	var pushTimeout time.Duration
	if tp, ok := pusher.(TimedPusher); ok {
		pushTimeout = tp.PushTimeout()
	}
	admitBefore := max(cfg.Lease/2, LeaseFloor(pushTimeout, cfg.FlushInterval))
	s := &Sender{
		admitBefore:  admitBefore,
		recordWithin: admitBefore - pushTimeout - cfg.FlushInterval, // recordRoundTrip at least
		store:        store,
		pusher:       pusher,
		cfg:          cfg,
		log:          log,
		limiter:      rate.NewLimiter(rate.Limit(perSecond), burst),
		wake:         make(chan struct{}, 1),
		outcomes:     make(chan *notification.Delivery, cfg.inFlightBound()+cfg.BatchSize),
		gate:         newWorkerGate(0),

		seed:      maphash.MakeSeed(),
		quota:     newQuotaDetector(cfg.QuotaDevices, cfg.QuotaWindow),
		mismatch:  newQuotaDetector(cfg.QuotaDevices, cfg.QuotaWindow),
		holds:     newDeviceHolds(),
		platforms: newPlatformGate(cfg.PlatformPause, cfg.PlatformMaxPause),
		alarms:    newAlarmLog(log, cfg.AlarmLogInterval, cfg.Telemetry),
		tel:       cfg.Telemetry,
	}
	s.batchTook.Store(int64(recordRoundTrip))
	return s, nil
}

// Wake tells the sender that deliveries may be due, so it claims now rather
// than at its next poll. It never blocks.
func (s *Sender) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters so far.
func (s *Sender) Stats() SenderStats {
	return SenderStats{
		Claimed: s.stats.claimed.Load(), Sent: s.stats.sent.Load(), TokensPruned: s.stats.pruned.Load(),
		Failed: s.stats.failed.Load(), RetriesScheduled: s.stats.retries.Load(), Released: s.stats.released.Load(),
		ConfigAlarms: s.stats.alarms.Load(), QuotaExceeded: s.stats.quota.Load(), CircuitOpen: s.stats.circuit.Load(),
		QuotaPauses: s.stats.quotaPauses.Load(), PlatformPauses: s.stats.platformPauses.Load(),
		ClosedBeforePush: s.stats.closed.Load(), InFlight: s.inFlight.Load(), InFlightLimit: s.gate.limit.Load(),
	}
}

// Run sends until ctx ends, then stops claiming, waits for the pushes in
// flight (each bounded by the Pusher's deadline), releases the deliveries
// it had claimed but not started, records every outcome, and returns nil.
// It returns an error only if it was already running. Database errors are
// logged and retried with backoff; they do not stop it. Run may be called
// again after it returned: each run has its own queues.
//
// Long-lived workers push, as many as the limit allows (MaxInFlight, or
// the adaptive limit: workers are started as it grows, and those above it
// park when it shrinks); one goroutine keeps a queue of up to BatchSize
// claimed deliveries ahead of them, so workers never wait for a claim and
// claims come in large batches; one goroutine records outcomes.
func (s *Sender) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("sender is already running")
	}
	defer s.running.Store(false)

	// Per run: the previous run closed its channel. Set before any
	// goroutine of this run starts, read only by them.
	s.outcomes = make(chan *notification.Delivery, s.cfg.inFlightBound()+s.cfg.BatchSize)
	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		s.recordLoop()
	}()

	queue := make(chan Dispatch, s.cfg.BatchSize)
	var workers sync.WaitGroup
	started := 0
	startWorkers := func(limit int) {
		for ; started < limit; started++ {
			workers.Add(1)
			go func(i int) {
				defer workers.Done()
				s.work(ctx, i, queue)
			}(started)
		}
	}
	tuned := make(chan struct{})
	if s.cfg.MaxInFlight > 0 {
		s.gate.set(s.cfg.MaxInFlight)
		startWorkers(s.cfg.MaxInFlight)
		close(tuned)
	} else {
		s.ruleMu.Lock()
		s.rule = newConcurrencyRule(s.cfg.RatePerMinute, s.cfg.InFlightCeiling)
		limit := s.rule.Limit()
		s.ruleMu.Unlock()
		s.gate.set(limit)
		startWorkers(limit)
		go func() {
			defer close(tuned)
			s.tuneLoop(ctx, startWorkers)
		}()
	}
	s.claimLoop(ctx, queue)
	<-tuned // no worker starts after this
	close(queue)
	workers.Wait()
	close(s.outcomes)
	<-recorded
	return nil
}

// work is worker i: it takes claimed deliveries from queue and pushes them
// while the gate admits it, and gives back what is queued once ctx ends.
//
// A worker takes a delivery only once it holds room for its outcome at the
// recorder (see recorderRoom): while the recorder is behind, workers wait
// holding no claim, the queue stays full and the claim loop claims nothing
// more.
func (s *Sender) work(ctx context.Context, i int, queue <-chan Dispatch) {
	// A push is not cancelled when ctx ends (see push): its context is ctx
	// without the cancellation, made once here rather than once a push.
	detached := context.WithoutCancel(ctx)
	for s.gate.admit(ctx, i) {
		r := s.reserveRecorder(ctx)
		if r == roomWait {
			break // ctx ended
		}
		d, ok := <-queue
		if !ok {
			s.reserved.Add(-1)
			return
		}
		if ctx.Err() != nil {
			s.held.Add(-1)
			s.release(d.Delivery) // shutting down: not started, give it back
			s.reserved.Add(-1)
			break
		}
		s.inFlight.Add(1)
		switch {
		case r == roomRelease && s.batchTook.Load() > int64(s.recordWithin):
			// The recorder is too slow for any lease: the outcome could
			// not be recorded in time even alone.
			s.held.Add(-1)
			s.release(d.Delivery)
		case !s.awaitBatchInHand(ctx):
			s.held.Add(-1)
			s.release(d.Delivery) // shutting down: not started, give it back
		default:
			s.push(ctx, detached, d)
		}
		s.inFlight.Add(-1)
		s.reserved.Add(-1)
	}
	for d := range queue {
		s.held.Add(-1)
		s.release(d.Delivery) // shutting down: not started, give it back
	}
}

// paceMeter measures how fast a process's claimed deliveries go through
// the send budget, for the claim loop.
type paceMeter struct {
	at      time.Time
	passed  int64
	rate    float64 // deliveries per second, smoothed; 0 until measured
	ceiling float64 // the configured rate, per second: the pace cannot exceed it
	// claimTook is how long a claim takes, smoothed; 0 until measured.
	claimTook time.Duration
}

// claimed tells the meter how long a claim took.
func (m *paceMeter) claimed(took time.Duration) {
	if m.claimTook == 0 {
		m.claimTook = took
	} else {
		m.claimTook = (7*m.claimTook + 3*took) / 10
	}
}

// paceWindow is the shortest span a pace is measured over.
const paceWindow = 100 * time.Millisecond

// room returns how many more deliveries the claim loop may claim so that
// no more than holdFor of pushes at the pace (at least minHeld) wait, or 0
// until half of those have gone (so that claims stay large). The pace is
// measured only while deliveries wait (otherwise it measures the supply,
// not the demand); before it is known, or while nothing waits, the
// configured rate stands for it.
//
// The half left when the next claim starts must last until that claim
// lands, or the workers run dry: then the pace measured is the claims'
// supply, not the demand, and a smaller target makes a smaller supply, down
// to the floor. So when claims take longer than holdFor/2 (with the claim
// loop's tick), what is held covers two claims' time instead. Measured
// with a store whose claims of 500 took 105 ms, pushes of 250 ms and a rate
// of 5,000/s: a tenth of a second alone settled at 2,600/s (the sender
// before the pace, 4,700/s); with the two claims' time, 4,700/s.
func (m *paceMeter) room(now time.Time, passed, held int64) int {
	if m.at.IsZero() {
		m.at, m.passed = now, passed
	} else if elapsed := now.Sub(m.at); elapsed >= paceWindow {
		if held > 0 {
			r := float64(passed-m.passed) / elapsed.Seconds()
			if m.rate == 0 {
				m.rate = r
			} else {
				m.rate = 0.7*m.rate + 0.3*r
			}
		}
		m.at, m.passed = now, passed
	}
	pace := m.rate
	if pace <= 0 || held <= 0 {
		pace = m.ceiling
	}
	hold := max(holdFor, 2*(m.claimTook+refillTick))
	target := int64(max(minHeld, min(pace*hold.Seconds(), math.MaxInt32)))
	if held > target/2 {
		return 0
	}
	return int(target - held)
}

// tuneTick is how often the adaptive limit's window is checked.
const tuneTick = 20 * time.Millisecond

// tuneLoop moves the adaptive limit until ctx ends: it reads FCM's strained
// answers from the Pusher, closes the rule's windows, and starts workers
// as the limit grows.
func (s *Sender) tuneLoop(ctx context.Context, startWorkers func(int)) {
	counter, _ := s.pusher.(StrainCounter)
	var strained int64
	if counter != nil {
		strained = counter.StrainedAttempts()
	}
	ticker := time.NewTicker(tuneTick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		now := time.Now()
		s.ruleMu.Lock()
		if counter != nil {
			if n := counter.StrainedAttempts(); n > strained {
				strained = n
				s.rule.strain(now)
			}
		}
		changed := s.rule.tick(now)
		limit := s.rule.Limit()
		s.ruleMu.Unlock()
		if changed {
			startWorkers(limit)
			s.gate.set(limit)
			s.log.Debug("in-flight limit changed", "limit", limit)
		}
	}
}

// observeRoundTrip feeds a push's round trip to the adaptive limit. Pushes
// FCM never answered (the breaker refused them, Herald cancelled them, the
// SDK refused the message before any request) say nothing about its round
// trip. Counted, a window of instant refusals set the limit's baseline
// near zero, every real round trip after it looked like FCM queueing, and
// the limit was cut to its floor for every user's pushes.
func (s *Sender) observeRoundTrip(rtt time.Duration, saturated bool, err error) {
	if s.cfg.MaxInFlight > 0 || errors.Is(err, notification.ErrCircuitOpen) || errors.Is(err, notification.ErrPushCancelled) {
		return
	}
	var se *notification.SendError
	if errors.As(err, &se) && se.NoRequest {
		return
	}
	s.ruleMu.Lock()
	if s.rule != nil {
		s.rule.observe(time.Now(), rtt, saturated)
	}
	s.ruleMu.Unlock()
}

// strain tells the adaptive limit that FCM is overloaded.
func (s *Sender) strain() {
	if s.cfg.MaxInFlight > 0 {
		return
	}
	s.ruleMu.Lock()
	if s.rule != nil {
		s.rule.strain(time.Now())
	}
	s.ruleMu.Unlock()
}

// recheckAfter is how long a claimed delivery may wait for its push before
// its claim is checked again in the store. Pushes flowing normally wait far
// less; the check costs one query per push only while sending is held back.
const recheckAfter = 250 * time.Millisecond

// holdFor bounds how long, at this process's measured pace, a claimed
// delivery waits for its push: the claim loop keeps no more claimed
// deliveries waiting (queued, or for the send budget) than the process
// pushed in this long. A process given a small share of the fleet's budget
// then claims small batches instead of a full queue it takes seconds to
// push, which made every queued push wait past recheckAfter and cost a
// query each (measured: 15,758 checks for 50,000 pushes with three
// processes sharing 5,000/s), and left fewer deliveries to the others.
// Claims slower than half of it stretch it to two claims' time (see
// paceMeter.room): a queue that runs dry at every claim costs more than a
// recheck.
const holdFor = 100 * time.Millisecond

// minHeld is the fewest claimed deliveries the claim loop keeps waiting,
// however slow the pace, so that claims stay worth their cost.
const minHeld = 64

// refillTick is how often a busy claim loop checks whether the queue has
// room for another claim: short against the time workers take to drain half
// a queue (500 pushes at 4,000/s is 125 ms).
const refillTick = 10 * time.Millisecond

// claimLoop keeps queue filled with claimed deliveries until ctx ends.
func (s *Sender) claimLoop(ctx context.Context, queue chan<- Dispatch) {
	retry := backoff.New(50*time.Millisecond, 5*time.Second)
	// Claim when at least half the queue is free, so that claims stay
	// large, and often enough that the workers never run dry.
	minRoom := max(1, cap(queue)/2)
	// Never queue more than the rate limit lets out in a quarter of a
	// lease, so that queued deliveries are pushed long before it ends.
	perLease := int(float64(s.limiter.Limit()) * s.cfg.Lease.Seconds() / 4)
	limit := max(1, min(cap(queue), perLease))
	minRoom = min(minRoom, limit)
	pace := paceMeter{ceiling: float64(s.limiter.Limit())}
	for ctx.Err() == nil {
		if !s.waitPause(ctx) {
			return
		}
		if !s.live() {
			sleep(ctx, fencedPause)
			continue
		}
		space := limit - len(queue)
		want := pace.room(time.Now(), s.passed.Load(), s.held.Load())
		if want <= 0 || space < minRoom && space <= want {
			sleep(ctx, refillTick)
			continue
		}
		room := min(space, want)
		claimStart := time.Now()
		batch, err := s.store.ClaimDue(ctx, s.cfg.Now(), room, s.cfg.Lease)
		s.tel.ClaimDone(claimStart)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := retry.Next()
			s.log.Error("claim due deliveries", "err", err, "retry_in", wait)
			sleep(ctx, wait)
			continue
		}
		retry.Reset()
		pace.claimed(time.Since(claimStart))
		s.stats.claimed.Add(int64(len(batch)))
		s.held.Add(int64(len(batch)))
		for _, d := range batch {
			d.claimed = claimStart
			queue <- d // never blocks: we claimed at most the room left
		}
		if len(batch) < room {
			// Nothing more is due: wait for new deliveries or the next poll.
			select {
			case <-s.wake:
			case <-time.After(s.cfg.PollInterval):
			case <-ctx.Done():
			}
		}
	}
}

// live reports whether this instance may claim: false while its budget
// says the fleet may take it for dead (see LiveBudget).
func (s *Sender) live() bool {
	b, ok := s.cfg.Budget.(LiveBudget)
	return !ok || b.Live()
}

// push sends one claimed delivery and hands its outcome to the recorder.
// ctx bounds its waits and checks; the push itself runs in detached, ctx
// without its cancellation.
func (s *Sender) push(ctx, detached context.Context, d Dispatch) {
	waiting := true // counted in held until it is through the budget
	defer func() {
		if waiting {
			s.held.Add(-1)
		}
	}()
	s.alarms.flush(s.cfg.Now())
	if !s.waitPause(ctx) {
		s.release(d.Delivery)
		return
	}
	checked, checkedReal := s.cfg.Now(), time.Now()
	device := maphash.String(s.seed, d.Message.Token)
	if !s.stillToPush(ctx, d, device, checked, d.Delivery.DueAt().Add(-s.cfg.Lease), d.claimed) {
		return
	}
	// The send budget is taken last, after every check that may wait on the
	// database, so that a push leaves as soon as its token is granted and
	// the fleet's pushes reach FCM at the pace they were granted. The pause
	// is checked again after the rate limiter: a QUOTA_EXCEEDED may have
	// arrived while this push queued for a token, and Retry-After holds for
	// every push, not only for those that had not queued yet.
	//
	// An instance fenced meanwhile (no heartbeat for nearly DeadAfter) may
	// have been reaped, its claims freed and taken by another, however
	// soon its next heartbeat lifts the fence: its claim is checked in the
	// store whatever the wait.
	fenced := !s.live()
	ok, waitedFence := s.waitRate(ctx)
	if !ok || !s.waitPause(ctx) {
		s.release(d.Delivery)
		return
	}
	waiting = false
	s.held.Add(-1)
	s.passed.Add(1)
	now := s.cfg.Now()
	if fenced || waitedFence {
		checked = time.Time{}
	}
	if !s.stillToPush(ctx, d, device, now, checked, checkedReal) {
		return // it waited for its token: checked again (in the store only if long, or fenced)
	}
	ticket, until, ok := s.platforms.admit(d.Message.Platform, now)
	if !ok {
		s.releaseUntil(d.Delivery, until)
		return
	}
	// The push itself is not cancelled when Run's ctx ends: it finishes
	// within the Pusher's deadline and its outcome is recorded.
	pushCtx, span := s.tel.StartPush(detached, telemetry.PushInfo{
		DeliveryID: d.Delivery.ID(), NotificationID: d.Delivery.NotificationID(), Token: d.Message.Token,
		Platform: platformName(d.Message.Platform), Attempt: d.Delivery.Attempts(), TraceParent: d.TraceParent, SendAt: d.SendAt})
	saturated := s.inFlight.Load() >= s.gate.limit.Load()
	pushStart := time.Now()
	name, err := s.pusher.Push(pushCtx, d.Message)
	s.observeRoundTrip(time.Since(pushStart), saturated, err)
	now = s.cfg.Now()
	if err == nil {
		span.EndPush(string(notification.StatusSent), "", name)
		s.quota.observe(now, device, false)
		s.mismatch.observe(now, device, false)
		s.accepted.Store(true)
		s.acceptedAt.Store(now.UnixNano())
		if s.platforms.answered(d.Message.Platform, ticket, true) {
			s.log.Info("platform credentials accepted again: pushes resumed", "platform", platformName(d.Message.Platform))
		}
		if markErr := d.Delivery.MarkSent(name, now); markErr != nil {
			s.log.Error("mark delivery sent", "delivery_id", d.Delivery.ID(), "err", markErr)
			return
		}
		s.stats.sent.Add(1)
		s.outcomes <- d.Delivery
		return
	}
	err = s.onFailure(d, device, ticket, err, now)
	status, recErr := d.Delivery.RecordFailure(err, s.cfg.Retry, now, s.cfg.Jitter())
	span.EndPush(string(status), errorType(err), "")
	if recErr != nil {
		s.log.Error("record delivery failure", "delivery_id", d.Delivery.ID(), "err", recErr)
		return
	}
	switch status {
	case notification.StatusTokenPruned:
		s.stats.pruned.Add(1)
	case notification.StatusFailed:
		s.stats.failed.Add(1)
		code := d.Delivery.ErrorCode()
		s.alarms.add(now, "delivery_failed:"+code, slog.LevelWarn, "delivery failed",
			"delivery_id", d.Delivery.ID(), "notification_id", d.Delivery.NotificationID(), "code", code,
			"attempts", d.Delivery.Attempts(), "err", d.Delivery.LastError())
	case notification.StatusRetryScheduled, notification.StatusPending:
		if !notification.CountsAsAttempt(err) {
			s.stats.released.Add(1)
		} else {
			s.stats.retries.Add(1)
		}
	}
	s.outcomes <- d.Delivery
}

// stillToPush checks, at now, that a claimed delivery may still be pushed:
// its lease has room left for the push, its claim is still current (checked
// in the store only when it was last known current more than recheckAfter
// ago, at since on the sender's clock or at sinceReal on Go's monotonic
// clock, if known), and its device is not held. Otherwise it gives the
// delivery back (or counts it closed) and returns false.
func (s *Sender) stillToPush(ctx context.Context, d Dispatch, device uint64, now, since, sinceReal time.Time) bool {
	// A delivery that waited in the queue (a long pause, a slow rate) must
	// not be pushed near the end of its lease: another sender may take it
	// over meanwhile and push it too. Give it back to be claimed afresh.
	// The push must also end, and its outcome be recorded, before the
	// lease does: it needs its own deadline, a flush, and the recorder's
	// time (recordWithin, which the recorder's room keeps it within).
	// What is left is measured on the sender's clock and in real time,
	// whichever is shorter: the database ends the lease in real time, and a
	// clock stepped back must not stretch it.
	left := d.Delivery.DueAt().Sub(now)
	if !d.claimed.IsZero() {
		left = min(left, s.cfg.Lease-time.Since(d.claimed))
	}
	if left < s.admitBefore {
		s.release(d.Delivery)
		return false
	}
	// A notification that expired while its delivery waited is not pushed:
	// it ends expired.
	if d.expired(now) {
		if err := d.Delivery.MarkExpired(now); err != nil {
			s.log.Error("mark delivery expired", "delivery_id", d.Delivery.ID(), "err", err)
			return false
		}
		s.stats.closed.Add(1)
		s.outcomes <- d.Delivery
		return false
	}
	// A claim that waited (a pause, a slow rate) is checked again just
	// before the push: its token may have moved to another user meanwhile,
	// which closes the delivery, and the push must then go to nobody. The
	// wait is measured in real time too: a clock stepped back must not
	// make it look short.
	if now.Sub(since) > recheckAfter || !sinceReal.IsZero() && time.Since(sinceReal) > recheckAfter {
		current, err := s.store.StillClaimed(ctx, d.Delivery)
		if err != nil {
			s.release(d.Delivery)
			return false
		}
		if !current {
			s.stats.closed.Add(1)
			return false // closed by someone else: nothing to push or record
		}
	}
	// A throttled device waits; nothing else does.
	if until, held := s.holds.heldUntil(device, now); held {
		s.releaseUntil(d.Delivery, until)
		return false
	}
	return true
}

// onFailure reacts to a failed push in what concerns more than its delivery
// (pauses, holds, alarms), and returns the error the delivery is to record:
// a push rejected for its platform's credentials is due again no sooner
// than the platform's pause ends.
func (s *Sender) onFailure(d Dispatch, device uint64, ticket gateTicket, err error, now time.Time) error {
	var se *notification.SendError
	if !errors.As(err, &se) {
		se = &notification.SendError{}
	}
	platform := d.Message.Platform
	projectWide, mismatchWide := false, false
	if !errors.Is(err, notification.ErrCircuitOpen) && !errors.Is(err, notification.ErrPushCancelled) {
		// The breaker's refusal and Herald's own cancellations are not
		// answers from FCM.
		projectWide = s.quota.observe(now, device, errors.Is(err, notification.ErrQuotaExceeded))
		mismatchWide = s.mismatch.observe(now, device, errors.Is(err, notification.ErrSenderMismatch))
	}
	switch {
	case errors.Is(err, notification.ErrCircuitOpen):
		s.stats.circuit.Add(1)
		s.pause(s.cfg.CircuitOpenPause)
	case errors.Is(err, notification.ErrQuotaExceeded):
		s.stats.quota.Add(1)
		wait := s.cfg.QuotaPause
		if se.RetryAfter > 0 {
			wait = se.RetryAfter
		}
		if projectWide {
			s.stats.quotaPauses.Add(1)
			s.strain()
			s.pause(wait)
			if s.cfg.Budget != nil {
				s.cfg.Budget.PauseAll(wait)
			}
			s.alarms.add(now, "quota_project", slog.LevelWarn,
				"fcm quota exceeded on several devices at once: pausing all sends",
				"pause", wait, "devices", s.cfg.QuotaDevices, "window", s.cfg.QuotaWindow)
		} else {
			s.holds.hold(device, wait, now)
			s.alarms.add(now, "quota_device", slog.LevelWarn,
				"fcm quota exceeded for one device: holding its pushes, the others go on",
				"hold", wait, "delivery_id", d.Delivery.ID())
		}
	case errors.Is(err, notification.ErrPlatformAuthRejected):
		s.stats.alarms.Add(1)
		until, paused := s.platforms.rejected(platform, ticket, now)
		if paused {
			s.stats.platformPauses.Add(1)
		}
		s.alarms.add(now, "platform_auth:"+platformName(platform), slog.LevelError,
			"configuration alarm: APNs or web push credentials rejected (THIRD_PARTY_AUTH_ERROR): pausing this platform's pushes",
			"platform", platformName(platform), "code", se.Code, "paused_until", until, "err", se.Reason)
		if wait := until.Sub(now); wait > se.RetryAfter {
			retry := *se
			retry.RetryAfter = wait
			return &retry
		}
	case errors.Is(err, notification.ErrSenderMismatch):
		s.stats.alarms.Add(1)
		// A token of another project is useless here and is pruned, but
		// only once FCM has accepted a push of this sender, and not while
		// several devices in a row answer nothing but SENDER_ID_MISMATCH:
		// a server running with another project's credentials gets that
		// answer for every token, and pruning would empty the registry.
		// Then the token is kept and the delivery given back, no attempt
		// counted, and with several devices all sending pauses. The last
		// answers all alike also keep it however slowly they came: a quiet
		// sender must not prune a token per answer until the registry is
		// empty because fewer than QuotaDevices fit in QuotaWindow.
		if s.accepted.Load() && !(mismatchWide && !s.mismatch.anyOther(now)) && !s.mismatch.onlyWatched() {
			s.alarms.add(now, "sender_id_mismatch", slog.LevelError,
				"configuration alarm: a token belongs to another Firebase project (SENDER_ID_MISMATCH): token pruned",
				"code", se.Code, "delivery_id", d.Delivery.ID(), "platform", platformName(platform))
			break
		}
		// All sending pauses only if no push was accepted within
		// QuotaWindow either: while FCM accepts other pushes, the project
		// is right, and a run of foreign tokens (a registry that moved
		// projects) must not hold every healthy push for QuotaPause.
		paused := false
		if last := time.Unix(0, s.acceptedAt.Load()); mismatchWide &&
			(!s.accepted.Load() || last.After(now) || now.Sub(last) > s.cfg.QuotaWindow) {
			s.pause(s.cfg.QuotaPause)
			paused = true
		}
		s.alarms.add(now, "sender_id_mismatch_project", slog.LevelError,
			"configuration alarm: SENDER_ID_MISMATCH before FCM accepted any push, or on several devices and nothing else: "+
				"this server's credentials may belong to another Firebase project; tokens kept, deliveries given back",
			"code", se.Code, "delivery_id", d.Delivery.ID(), "devices", s.cfg.QuotaDevices, "paused", paused)
		// An answer all the same: a probe of a paused platform lets the
		// next push probe, or the platform would wait for good.
		s.platforms.answered(platform, ticket, false)
		return &notification.SendError{Class: notification.ErrCredentialsRejected, Code: se.Code,
			Reason:     "SENDER_ID_MISMATCH not attributed to the token: no push of this server accepted yet, or every recent answer the same",
			RetryAfter: s.cfg.QuotaPause, Err: se.Err}
	case errors.Is(err, notification.ErrMisconfigured):
		s.stats.alarms.Add(1)
		s.alarms.add(now, "misconfigured:"+se.Code, slog.LevelError,
			"configuration alarm: fcm refused our configuration", "code", se.Code, "err", se.Reason)
	}
	if !errors.Is(err, notification.ErrPlatformAuthRejected) {
		s.platforms.answered(platform, ticket, false)
	}
	return err
}

// waitRate takes a token from the fleet's budget and the local rate
// limiter. It returns false if ctx ended, and fenced if the budget held it
// while this instance might be taken for dead (see LiveBudget).
func (s *Sender) waitRate(ctx context.Context) (ok, fenced bool) {
	start := time.Now()
	ok, fenced = s.takeBudget(ctx)
	ok = ok && s.limiter.Wait(ctx) == nil
	s.tel.RateWaited(time.Since(start))
	return ok, fenced
}

// errorType names a failed push's class for metrics and spans: FCM's code
// when it answered with one, else Herald's class.
func errorType(err error) string {
	var se *notification.SendError
	if errors.As(err, &se) && se.Code != "" {
		return se.Code
	}
	switch {
	case errors.Is(err, notification.ErrCircuitOpen):
		return "circuit_open"
	case errors.Is(err, notification.ErrPushCancelled):
		return "cancelled"
	case errors.Is(err, notification.ErrProviderUnavailable):
		return "unavailable"
	case errors.Is(err, notification.ErrQuotaExceeded):
		return "quota_exceeded"
	default:
		return "other"
	}
}

// platformName names p in logs, alarms and spans: a platform Herald does
// not know (a token row written around it may hold kilobytes of anything,
// each row another) is "unknown", or it would make a metric series of its
// own with a label of that size.
func platformName(p notification.Platform) string {
	if !p.Valid() {
		return "unknown"
	}
	return string(p)
}

func (s *Sender) release(d *notification.Delivery) {
	s.releaseUntil(d, s.cfg.Now())
}

// releaseUntil gives a claimed delivery back unattempted, due at until.
func (s *Sender) releaseUntil(d *notification.Delivery, until time.Time) {
	if err := d.Release(until, s.cfg.Now()); err != nil {
		s.log.Error("release delivery", "delivery_id", d.ID(), "err", err)
		return
	}
	s.stats.released.Add(1)
	s.outcomes <- d
}

// takeBudget takes one push from the fleet's budget, waiting out the
// fleet's pauses. It returns false if ctx ended, and fenced if a pause was
// the fence of an instance that might be taken for dead.
func (s *Sender) takeBudget(ctx context.Context) (ok, fenced bool) {
	if s.cfg.Budget == nil {
		return true, false
	}
	for {
		pause, err := s.cfg.Budget.Take(ctx)
		if err != nil {
			return false, fenced
		}
		if pause <= 0 {
			return true, fenced
		}
		fenced = fenced || !s.live()
		s.pause(pause)
		if !s.waitPause(ctx) {
			return false, fenced
		}
	}
}

// pause stops every push from starting until now+d (or a later pause).
func (s *Sender) pause(d time.Duration) { s.pauseState.extend(s.cfg.Now(), d) }

// waitPause blocks while sending is paused. It returns false if ctx ended.
func (s *Sender) waitPause(ctx context.Context) bool {
	for {
		wait := s.pauseState.remaining(s.cfg.Now())
		if wait <= 0 {
			return ctx.Err() == nil
		}
		if !sleep(ctx, min(wait, 100*time.Millisecond)) {
			return false
		}
	}
}

// sendPause is the pause of all sending. A wait never exceeds the length
// the pause was set for, whatever the clock does: a wall clock stepped back
// by an hour during a one-second pause must not stop sending for an hour.
type sendPause struct {
	mu     sync.Mutex
	until  time.Time
	length time.Duration
}

func (p *sendPause) extend(now time.Time, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if until := now.Add(d); until.After(p.until) {
		p.until, p.length = until, d
	}
}

// remaining is how long sending still waits at now.
func (p *sendPause) remaining(now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	wait := p.until.Sub(now)
	if wait > p.length {
		// The clock went back: the pause ends at most its length from here.
		p.until, wait = now.Add(p.length), p.length
	}
	return wait
}

// room is what the recorder's pace allows a worker about to push.
type room int

const (
	roomWait    room = iota // the recorder is behind: wait for it
	roomPush                // push: the outcome will be recorded in time
	roomRelease             // give the claim back: the recorder is too slow for any lease
)

// recorderRoom says whether a push may start while n pushes hold room (see
// Sender.reserved), so that its outcome is recorded before its lease ends.
//
// A push started with admitBefore left of its lease ends within its
// timeout, and its outcome joins a batch within a flush interval; the
// recorder then has recordWithin to write it. Ahead of it are the batch the
// recorder holds (written or being filled), whose outcomes are no longer
// counted anywhere else, and the outcomes of the pushes holding room and
// those waiting, its own included: the recorder fills each batch with what waits,
// so they make ceil(that/BatchSize) batches. At batchTook a batch (or the
// time the batch in hand has taken so far, if longer), a push starts only
// while that fits recordWithin. Pushes started later count this one among
// theirs, so none of them pushes its outcome further back than its own
// rule allowed.
//
// With nothing holding room, waiting or in hand, the outcome is a batch
// alone. If even that does not fit, no lease can be met: the claim is
// given back (one at a time, and its record times the recorder again).
func (s *Sender) recorderRoom(n int64) room {
	ahead := n + int64(len(s.outcomes))
	took := s.batchTook.Load()
	since := s.handSince.Load()
	if since != 0 {
		took = max(took, s.cfg.Now().UnixNano()-since)
	}
	within := int64(s.recordWithin)
	if ahead == 0 && since == 0 {
		if took <= within {
			return roomPush
		}
		return roomRelease
	}
	if took > within {
		return roomWait
	}
	batch := int64(s.cfg.BatchSize)
	if took*(1+(ahead+batch)/batch) <= within { // 1 + ceil((ahead+1)/batch)
		return roomPush
	}
	return roomWait
}

// reserveRecorder waits until the recorder has room for one more push (or
// must see a claim given back), takes that room for the worker, and
// returns which. It returns roomWait, having taken nothing, if ctx ended.
// Its fast path is a few atomic loads and one compare-and-swap: only a
// worker that has to wait touches a lock.
func (s *Sender) reserveRecorder(ctx context.Context) room {
	var progress <-chan struct{}
	for {
		n := s.reserved.Load()
		if r := s.recorderRoom(n); r != roomWait {
			if s.reserved.CompareAndSwap(n, n+1) {
				return r
			}
			continue
		}
		if progress == nil {
			// Check again once subscribed: progress made between the
			// check and now is not missed.
			progress = s.recorded.next()
			continue
		}
		select {
		case <-progress:
		case <-time.After(s.cfg.FlushInterval):
			// A push that ended without an outcome (closed, or its record
			// failed) freed room without the recorder's progress.
		case <-ctx.Done():
			return roomWait
		}
		progress = nil
	}
}

// awaitBatchInHand holds a worker that reserved its room before it waited
// for a claim (see work) while the batch the recorder holds has taken
// longer than an outcome alone could wait for: the recorder's pace changed
// since. It waits only for that batch, which ends (written or given up),
// never for other workers' room. It returns false if ctx ended.
func (s *Sender) awaitBatchInHand(ctx context.Context) bool {
	var progress <-chan struct{}
	for {
		since := s.handSince.Load()
		if since == 0 || 2*(s.cfg.Now().UnixNano()-since) <= int64(s.recordWithin) {
			return true
		}
		if progress == nil {
			progress = s.recorded.next()
			continue
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return false
		}
		progress = nil
	}
}

// recorderProgress wakes the workers waiting for the recorder each time it
// takes a batch from the outcomes waiting or finishes writing one.
type recorderProgress struct {
	mu sync.Mutex
	ch chan struct{} // nil while nobody waits
}

// next returns a channel closed at the recorder's next progress.
func (p *recorderProgress) next() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == nil {
		p.ch = make(chan struct{})
	}
	return p.ch
}

func (p *recorderProgress) signal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch != nil {
		close(p.ch)
		p.ch = nil
	}
}

// recordLoop writes outcomes in batches until the outcomes channel closes.
// A batch is written when it is full, or at the flush interval with every
// outcome waiting by then (up to a batch): a short batch leaves only when
// nothing else waits, which recorderRoom's count of batches relies on.
func (s *Sender) recordLoop() {
	batch := make([]*notification.Delivery, 0, s.cfg.BatchSize)
	ticker := time.NewTicker(s.cfg.FlushInterval)
	defer ticker.Stop()
	for {
		select {
		case d, ok := <-s.outcomes:
			if !ok {
				s.flush(batch)
				return
			}
			batch = s.hold(batch, d)
			if len(batch) < s.cfg.BatchSize {
				continue
			}
		case <-ticker.C:
			if len(batch) == 0 {
				continue
			}
		fill:
			for len(batch) < s.cfg.BatchSize {
				select {
				case d, ok := <-s.outcomes:
					if !ok {
						s.flush(batch)
						return
					}
					batch = append(batch, d)
				default:
					break fill
				}
			}
		}
		s.flush(batch)
		batch = batch[:0]
	}
}

// hold adds d to the batch the recorder holds, noting when it took the
// batch's first outcome.
func (s *Sender) hold(batch []*notification.Delivery, d *notification.Delivery) []*notification.Delivery {
	if len(batch) == 0 {
		s.handSince.Store(s.cfg.Now().UnixNano())
	}
	return append(batch, d)
}

// flush records a batch, retrying until it succeeds or one Lease has
// passed, on the sender's clock or in real time: an unrecorded outcome is
// retried after its lease, so giving up risks a duplicate, never a loss.
func (s *Sender) flush(batch []*notification.Delivery) {
	if len(batch) == 0 {
		return
	}
	// The batch no longer waits: workers may fit now, and again once it is
	// written (or given up).
	s.recorded.signal()
	defer func() {
		s.handSince.Store(0)
		s.recorded.signal()
	}()
	retry := backoff.New(50*time.Millisecond, 2*time.Second)
	started := time.Now()
	deadline := s.cfg.Now().Add(s.cfg.Lease)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		recordStart, clockStart := time.Now(), s.cfg.Now()
		n, err := s.store.Record(ctx, batch)
		s.tel.RecordDone(recordStart)
		cancel()
		if err == nil {
			s.timeBatch(s.cfg.Now().Sub(clockStart), time.Since(recordStart))
			if n < len(batch) {
				s.log.Warn("some outcomes were not recorded: their claims had expired", "stale", len(batch)-n)
			}
			return
		}
		// Whichever comes first: the lease's end on the sender's clock, or
		// a Lease of real time (a clock stepped back never stretches it).
		if s.cfg.Now().After(deadline) || time.Since(started) > s.cfg.Lease {
			s.log.Error("giving up recording outcomes; their leases will expire and they will be retried",
				"deliveries", len(batch), "err", err)
			return
		}
		wait := retry.Next()
		s.log.Error("record outcomes", "deliveries", len(batch), "err", err, "retry_in", wait)
		time.Sleep(wait)
	}
}

// timeBatch notes how long a batch took to write: on the sender's clock,
// which its leases are reckoned in, unless that clock stepped back or
// further than a lease meanwhile (then in real time). A slower batch counts
// at once, a faster one only once it is not the exception: recorderRoom
// takes the longer of the last two.
func (s *Sender) timeBatch(onClock, real time.Duration) {
	took := onClock
	if took < 0 || took > s.cfg.Lease {
		took = real
	}
	s.batchTook.Store(int64(max(took, s.lastTook)))
	s.lastTook = took
}
