package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/herald-push/herald/notification"
)

// Dispatch is a claimed delivery with the message to push.
type Dispatch struct {
	Delivery *notification.Delivery
	Message  notification.Message
}

// DeliveryStore is the sender's view of stored deliveries.
type DeliveryStore interface {
	// ClaimDue leases up to limit due deliveries (pending, retry scheduled,
	// or claimed with an expired lease) until now+lease under one claim id,
	// in one short transaction, and returns them with their messages. Two
	// senders never receive the same delivery for the same lease.
	ClaimDue(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]Dispatch, error)
	// Record saves the new state of claimed deliveries in one short
	// transaction and, for deliveries whose token was pruned, deletes the
	// token in that same transaction. A delivery whose claim is no longer
	// current (its lease expired and another sender claimed it) is left
	// alone. It returns how many deliveries were recorded.
	Record(ctx context.Context, ds []*notification.Delivery) (int, error)
}

// Pusher sends one message to the push provider. A failure is a
// *notification.SendError whose Class says what happened; Pusher
// implementations classify the provider's errors and own the circuit breaker
// (returning notification.ErrCircuitOpen without calling the provider).
type Pusher interface {
	Push(ctx context.Context, msg notification.Message) (messageName string, err error)
}

// SenderConfig configures a Sender. Zero values mean the documented defaults.
type SenderConfig struct {
	// MaxInFlight bounds the pushes in flight at once. Throughput is about
	// MaxInFlight divided by FCM's round trip. Defaults to 128.
	MaxInFlight int
	// BatchSize is how many deliveries one claim takes and one record writes
	// at most. Defaults to 500.
	BatchSize int
	// RatePerMinute caps pushes per minute across this process (a token
	// bucket; FCM allows a project 600,000). Defaults to 600,000.
	RatePerMinute int
	// Lease is how long a claim holds a delivery. A sender that dies leaves
	// its claims to expire; then another sender takes them. A claimed
	// delivery is pushed only while at least half its lease remains, so the
	// lease must be more than twice the Pusher's send timeout. Defaults to
	// 1 minute.
	Lease time.Duration
	// PollInterval is how often an idle sender looks for due deliveries when
	// nothing wakes it. Defaults to 500ms.
	PollInterval time.Duration
	// FlushInterval is the longest an outcome waits before being recorded.
	// Defaults to 100ms.
	FlushInterval time.Duration
	// Retry decides when transient failures are retried. Defaults:
	// MaxAttempts 12, BaseDelay 10s (after the SDK's own retries end),
	// MaxDelay 1h.
	Retry notification.RetryPolicy
	// CircuitOpenPause is how long sending pauses when the circuit breaker
	// refuses a push. Defaults to 1s.
	CircuitOpenPause time.Duration
	// QuotaPause is how long sending pauses after QUOTA_EXCEEDED without
	// Retry-After. Defaults to 5s.
	QuotaPause time.Duration
	// Logger receives the sender's logs. Tokens and message bodies are never
	// logged. Defaults to discarding.
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Jitter returns a random number in [0, 1) for retry jitter. Defaults
	// to math/rand/v2.
	Jitter func() float64
}

func (c *SenderConfig) setDefaults() {
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 128
	}
	if c.BatchSize == 0 {
		c.BatchSize = 500
	}
	if c.RatePerMinute == 0 {
		c.RatePerMinute = 600_000
	}
	if c.Lease == 0 {
		c.Lease = time.Minute
	}
	if c.PollInterval == 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = 100 * time.Millisecond
	}
	if c.Retry.MaxAttempts == 0 {
		c.Retry.MaxAttempts = 12
	}
	if c.Retry.BaseDelay == 0 {
		c.Retry.BaseDelay = 10 * time.Second
	}
	if c.Retry.MaxDelay == 0 {
		c.Retry.MaxDelay = time.Hour
	}
	if c.CircuitOpenPause == 0 {
		c.CircuitOpenPause = time.Second
	}
	if c.QuotaPause == 0 {
		c.QuotaPause = 5 * time.Second
	}
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

// Validate reports every invalid field at once.
func (c SenderConfig) Validate() error {
	var errs []error
	if c.MaxInFlight < 0 {
		errs = append(errs, errors.New("max in flight must not be negative"))
	}
	if c.BatchSize < 0 {
		errs = append(errs, errors.New("batch size must not be negative"))
	}
	if c.RatePerMinute < 0 {
		errs = append(errs, errors.New("rate per minute must not be negative"))
	}
	for name, d := range map[string]time.Duration{
		"lease": c.Lease, "poll interval": c.PollInterval, "flush interval": c.FlushInterval,
		"retry base delay": c.Retry.BaseDelay, "retry max delay": c.Retry.MaxDelay,
		"circuit open pause": c.CircuitOpenPause, "quota pause": c.QuotaPause,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	if c.Retry.MaxAttempts < 0 {
		errs = append(errs, errors.New("retry max attempts must not be negative"))
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
	// CircuitOpen counts pushes the circuit breaker stopped.
	CircuitOpen int64
	// InFlight is the number of pushes in flight now.
	InFlight int64
}

// Sender claims due deliveries, pushes them outside any database
// transaction with at most MaxInFlight in flight and at most RatePerMinute a
// minute, and records the outcomes in batches. Run it in one goroutine per
// process (several processes may run one each); Wake and Stats are safe
// for concurrent use.
type Sender struct {
	store  DeliveryStore
	pusher Pusher
	cfg    SenderConfig
	log    *slog.Logger

	limiter    *rate.Limiter
	pauseUntil atomic.Int64 // unix nanoseconds; sending waits until then
	wake       chan struct{}
	outcomes   chan *notification.Delivery
	inFlight   atomic.Int64

	running atomic.Bool
	stats   struct {
		claimed, sent, pruned, failed, retries, released, alarms, quota, circuit atomic.Int64
	}
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
	return &Sender{
		store:    store,
		pusher:   pusher,
		cfg:      cfg,
		log:      cfg.Logger.With("component", "herald_sender"),
		limiter:  rate.NewLimiter(rate.Limit(perSecond), burst),
		wake:     make(chan struct{}, 1),
		outcomes: make(chan *notification.Delivery, cfg.MaxInFlight+cfg.BatchSize),
	}, nil
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
		InFlight: s.inFlight.Load(),
	}
}

// Run sends until ctx ends, then stops claiming, waits for the pushes in
// flight (each bounded by the Pusher's deadline), releases the deliveries
// it had claimed but not started, records every outcome, and returns nil.
// It returns an error only if it was already running. Database errors are
// logged and retried with backoff; they do not stop it.
//
// MaxInFlight long-lived workers push; one goroutine keeps a queue of up to
// BatchSize claimed deliveries ahead of them, so workers never wait for a
// claim and claims come in large batches; one goroutine records outcomes.
func (s *Sender) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("sender is already running")
	}
	defer s.running.Store(false)

	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		s.recordLoop()
	}()

	queue := make(chan Dispatch, s.cfg.BatchSize)
	var workers sync.WaitGroup
	for range s.cfg.MaxInFlight {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for d := range queue {
				if ctx.Err() != nil {
					s.release(d.Delivery) // shutting down: not started, give it back
					continue
				}
				s.inFlight.Add(1)
				s.push(ctx, d)
				s.inFlight.Add(-1)
			}
		}()
	}
	s.claimLoop(ctx, queue)
	close(queue)
	workers.Wait()
	close(s.outcomes)
	<-recorded
	return nil
}

// refillTick is how often a busy claim loop checks whether the queue has
// room for another claim: short against the time workers take to drain half
// a queue (500 pushes at 4,000/s is 125 ms).
const refillTick = 10 * time.Millisecond

// claimLoop keeps queue filled with claimed deliveries until ctx ends.
func (s *Sender) claimLoop(ctx context.Context, queue chan<- Dispatch) {
	backoff := newBackoff(50*time.Millisecond, 5*time.Second)
	// Claim when at least half the queue is free, so that claims stay
	// large, and often enough that the workers never run dry.
	minRoom := max(1, cap(queue)/2)
	// Never queue more than the rate limit lets out in a quarter of a
	// lease, so that queued deliveries are pushed long before it ends.
	perLease := int(float64(s.limiter.Limit()) * s.cfg.Lease.Seconds() / 4)
	limit := max(1, min(cap(queue), perLease))
	minRoom = min(minRoom, limit)
	for ctx.Err() == nil {
		if !s.waitPause(ctx) {
			return
		}
		room := limit - len(queue)
		if room < minRoom {
			sleep(ctx, refillTick)
			continue
		}
		batch, err := s.store.ClaimDue(ctx, s.cfg.Now(), room, s.cfg.Lease)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := backoff.next()
			s.log.Error("claim due deliveries", "err", err, "retry_in", wait)
			sleep(ctx, wait)
			continue
		}
		backoff.reset()
		s.stats.claimed.Add(int64(len(batch)))
		for _, d := range batch {
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

// push sends one claimed delivery and hands its outcome to the recorder.
func (s *Sender) push(ctx context.Context, d Dispatch) {
	// The pause is checked again after the rate limiter: a QUOTA_EXCEEDED
	// may have arrived while this push queued for a token, and Retry-After
	// holds for every push, not only for those that had not queued yet.
	if !s.waitPause(ctx) || s.limiter.Wait(ctx) != nil || !s.waitPause(ctx) {
		s.release(d.Delivery)
		return
	}
	// A delivery that waited in the queue (a long pause, a slow rate) must
	// not be pushed near the end of its lease: another sender may take it
	// over meanwhile and push it too. Give it back to be claimed afresh.
	if s.cfg.Now().After(d.Delivery.DueAt().Add(-s.cfg.Lease / 2)) {
		s.release(d.Delivery)
		return
	}
	// The push itself is not cancelled when Run's ctx ends: it finishes
	// within the Pusher's deadline and its outcome is recorded.
	name, err := s.pusher.Push(context.WithoutCancel(ctx), d.Message)
	now := s.cfg.Now()
	if err == nil {
		if markErr := d.Delivery.MarkSent(name, now); markErr != nil {
			s.log.Error("mark delivery sent", "delivery_id", d.Delivery.ID(), "err", markErr)
			return
		}
		s.stats.sent.Add(1)
		s.outcomes <- d.Delivery
		return
	}
	s.onFailure(err)
	status, recErr := d.Delivery.RecordFailure(err, s.cfg.Retry, now, s.cfg.Jitter())
	if recErr != nil {
		s.log.Error("record delivery failure", "delivery_id", d.Delivery.ID(), "err", recErr)
		return
	}
	switch status {
	case notification.StatusTokenPruned:
		s.stats.pruned.Add(1)
	case notification.StatusFailed:
		s.stats.failed.Add(1)
		s.log.Warn("delivery failed", "delivery_id", d.Delivery.ID(),
			"notification_id", d.Delivery.NotificationID(), "code", d.Delivery.ErrorCode(),
			"attempts", d.Delivery.Attempts(), "err", err)
	case notification.StatusRetryScheduled, notification.StatusPending:
		if !notification.CountsAsAttempt(err) {
			s.stats.released.Add(1)
		} else {
			s.stats.retries.Add(1)
		}
	}
	s.outcomes <- d.Delivery
}

// onFailure reacts to failures that concern all sending, not one delivery.
func (s *Sender) onFailure(err error) {
	var se *notification.SendError
	errors.As(err, &se)
	switch {
	case errors.Is(err, notification.ErrCircuitOpen):
		s.stats.circuit.Add(1)
		s.pause(s.cfg.CircuitOpenPause)
	case errors.Is(err, notification.ErrQuotaExceeded):
		s.stats.quota.Add(1)
		wait := s.cfg.QuotaPause
		if se != nil && se.RetryAfter > 0 {
			wait = se.RetryAfter
		}
		s.pause(wait)
		s.log.Warn("fcm quota exceeded: pausing all sends", "pause", wait)
	case errors.Is(err, notification.ErrMisconfigured):
		s.stats.alarms.Add(1)
		code := ""
		if se != nil {
			code = se.Code
		}
		s.log.Error("configuration alarm: fcm refused our configuration", "code", code, "err", err)
	}
}

func (s *Sender) release(d *notification.Delivery) {
	if err := d.Release(s.cfg.Now(), s.cfg.Now()); err != nil {
		s.log.Error("release delivery", "delivery_id", d.ID(), "err", err)
		return
	}
	s.stats.released.Add(1)
	s.outcomes <- d
}

// pause stops every push from starting until now+d (or a later pause).
func (s *Sender) pause(d time.Duration) {
	until := s.cfg.Now().Add(d).UnixNano()
	for {
		cur := s.pauseUntil.Load()
		if cur >= until || s.pauseUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// waitPause blocks while sending is paused. It returns false if ctx ended.
func (s *Sender) waitPause(ctx context.Context) bool {
	for {
		wait := time.Duration(s.pauseUntil.Load() - s.cfg.Now().UnixNano())
		if wait <= 0 {
			return ctx.Err() == nil
		}
		if !sleep(ctx, min(wait, 100*time.Millisecond)) {
			return false
		}
	}
}

// recordLoop writes outcomes in batches until the outcomes channel closes.
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
			batch = append(batch, d)
			if len(batch) < s.cfg.BatchSize {
				continue
			}
		case <-ticker.C:
		}
		if len(batch) > 0 {
			s.flush(batch)
			batch = batch[:0]
		}
	}
}

// flush records a batch, retrying until it succeeds or the time left for
// it runs out: an unrecorded outcome is retried after its lease, so giving
// up risks a duplicate, never a loss.
func (s *Sender) flush(batch []*notification.Delivery) {
	if len(batch) == 0 {
		return
	}
	backoff := newBackoff(50*time.Millisecond, 2*time.Second)
	deadline := time.Now().Add(s.cfg.Lease)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := s.store.Record(ctx, batch)
		cancel()
		if err == nil {
			if n < len(batch) {
				s.log.Warn("some outcomes were not recorded: their claims had expired", "stale", len(batch)-n)
			}
			return
		}
		if time.Now().After(deadline) {
			s.log.Error("giving up recording outcomes; their leases will expire and they will be retried",
				"deliveries", len(batch), "err", err)
			return
		}
		wait := backoff.next()
		s.log.Error("record outcomes", "deliveries", len(batch), "err", err, "retry_in", wait)
		time.Sleep(wait)
	}
}
