package app

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/backoff"
)

// BudgetStore is the fleet's shared send budget: a token bucket refilled by
// the store's clock, and a pause every instance honours.
type BudgetStore interface {
	// Grant takes min(want, whole tokens available) from a bucket of at
	// most capacity tokens refilled at perSecond, and reports how long the
	// fleet's pause still lasts (0 if none). Concurrent grants never give
	// the same token twice.
	Grant(ctx context.Context, want int, perSecond, capacity float64) (granted int, pause time.Duration, err error)
	// PauseAll pauses every instance's pushes for d (or until a later
	// pause already set ends).
	PauseAll(ctx context.Context, d time.Duration) error
}

// The budget's rules, as fractions of one second's rate. A grant is at
// most grantShare of a second (4 ms of budget) and the bucket holds at most
// capacityShare (10 ms), and at least one grant. Grants in any one second
// then never exceed the rate by more than the bucket's capacity plus the
// grants the instances hold unspent: rate × (1 + capacityShare + N ×
// grantShare), 2.2 % for N = 3, which leaves room under 5 % for the jitter
// between a grant and the push reaching FCM (a loaded machine delays some
// pushes and bunches them). A fleet spends the whole bound in its first
// second after idling (a full bucket, every instance's first grant).
// Measured with chaos replicas at 1,000/s, seeds 34-38, busiest second:
// 5 ms grants and a 15 ms bucket (3 %) gave 3.8-6.1 % over, two runs of
// five over 5 %; these rules 3.0-3.5 %. The bucket is what absorbs late
// grant requests: at 5 ms, one instance at 10,000/s lost tokens to the
// overflow (a 1M broadcast at 8,800-9,150/s against 9,270-9,410).
const (
	grantShare    = 0.004
	capacityShare = 0.01
	// stashFreshFor: tokens granted longer ago than this are not spent
	// before a grant (which may be of zero tokens) has read the fleet's
	// pause again, so a pause set by another instance stops this one within
	// this time, or one grant's worth of pushes, whichever comes first.
	stashFreshFor = 100 * time.Millisecond
	// fencedPause is how long a push waits before asking again while the
	// membership says this instance may already be taken for dead.
	fencedPause = 100 * time.Millisecond
)

// FleetBudgetConfig configures a FleetBudget.
type FleetBudgetConfig struct {
	// RatePerMinute is the fleet's budget: every instance must be given
	// the same. Zero means 600,000.
	RatePerMinute int
	// Live reports whether this instance still counts as alive to the
	// fleet (Membership.Live); when false, Take grants nothing and asks for
	// a short pause. Nil means always.
	Live func() bool
	// Logger receives database errors. Defaults to discarding.
	Logger *slog.Logger
	// Now is the local clock. Defaults to time.Now.
	Now func() time.Time
}

// FleetBudget is one instance's access to the fleet's send budget. It
// takes tokens from the shared bucket a grant (4 ms of the fleet's rate)
// at a time and hands them to pushes one by one; at most one grant is
// asked for at a time, the next one in the background once half the
// current one is spent, and the instance never holds more than one grant. It implements LiveBudget and is safe for concurrent
// use.
type FleetBudget struct {
	store     BudgetStore
	perSecond float64
	grant     int
	capacity  float64
	live      func() bool
	now       func() time.Time
	log       *slog.Logger

	fetching chan struct{} // a semaphore: one grant in flight
	fenced   atomic.Bool   // Live was false at the last Take

	mu          sync.Mutex
	stash       int
	fetchedAt   time.Time
	nextFetch   time.Time // a starved instance asks again no sooner
	pausedUntil time.Time
	pauseLen    time.Duration
	failing     bool
}

// NewFleetBudget returns the budget on store, which must not be nil.
func NewFleetBudget(store BudgetStore, cfg FleetBudgetConfig) *FleetBudget {
	if store == nil {
		panic("app: NewFleetBudget: nil store")
	}
	if cfg.RatePerMinute <= 0 {
		cfg.RatePerMinute = 600_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	perSecond := float64(cfg.RatePerMinute) / 60
	grant := max(1, int(perSecond*grantShare))
	return &FleetBudget{
		store:     store,
		perSecond: perSecond,
		grant:     grant,
		capacity:  max(float64(grant), 2, perSecond*capacityShare),
		live:      cfg.Live,
		now:       clockOrDefault(cfg.Now),
		log:       cfg.Logger.With("component", "herald_fleet_budget"),
		fetching:  make(chan struct{}, 1),
	}
}

// Live implements LiveBudget: whether this instance still counts as alive
// to the fleet (FleetBudgetConfig.Live), so that its sender may claim.
func (b *FleetBudget) Live() bool { return b.live == nil || b.live() }

// GrantSize is how many tokens one grant asks for at most.
func (b *FleetBudget) GrantSize() int { return b.grant }

// Take takes one push from the fleet's budget, blocking until the bucket
// grants one. When the fleet is paused (or this instance may be taken for
// dead) it takes nothing and returns how long to wait before asking again.
// It returns an error only when ctx ends; database errors are logged and
// retried.
func (b *FleetBudget) Take(ctx context.Context) (time.Duration, error) {
	if b.live != nil && !b.live() {
		if b.fenced.CompareAndSwap(false, true) {
			b.log.Warn("no heartbeat of this instance for nearly DeadAfter: pushes wait until one succeeds, " +
				"so that the others, which may take it for dead, do not push its claims twice")
		}
		return fencedPause, ctx.Err()
	}
	if b.fenced.CompareAndSwap(true, false) {
		b.log.Info("heartbeat current again: pushes resume")
	}
	retry := backoff.New(50*time.Millisecond, time.Second)
	for {
		if pause, ok := b.takeLocal(); ok || pause > 0 {
			if ok {
				b.prefetch()
			}
			return pause, nil
		}
		select {
		case b.fetching <- struct{}{}:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		// Another push may have fetched while this one waited.
		if pause, ok := b.takeLocal(); ok || pause > 0 {
			<-b.fetching
			return pause, nil
		}
		err := b.fetch(ctx)
		<-b.fetching
		if err != nil {
			if !backoff.Sleep(ctx, retry.Next()) {
				return 0, ctx.Err()
			}
			continue
		}
		retry.Reset()
	}
}

// prefetch asks for the next grant in the background once half the stash is
// spent, so that pushes rarely wait for a round trip. It asks for what
// tops the stash up to one grant, never more: an instance still holds at
// most one grant.
func (b *FleetBudget) prefetch() {
	b.mu.Lock()
	low := 2*b.stash < b.grant
	b.mu.Unlock()
	if !low {
		return
	}
	select {
	case b.fetching <- struct{}{}:
	default:
		return // a grant is already on its way
	}
	go func() {
		defer func() { <-b.fetching }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.fetch(ctx) // logged; a Take that finds the stash empty asks again
	}()
}

// takeLocal takes a fresh token from the stash. It reports the pause in
// force, if any, instead.
func (b *FleetBudget) takeLocal() (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if wait := b.pausedUntil.Sub(now); wait > 0 && wait <= b.pauseLen {
		return wait, false
	}
	if b.stash > 0 && now.Sub(b.fetchedAt) < stashFreshFor && !now.Before(b.fetchedAt) {
		b.stash--
		return 0, true
	}
	return 0, false
}

// fetch asks the store for a grant, after waiting until a starved instance
// may ask again.
func (b *FleetBudget) fetch(ctx context.Context) error {
	b.mu.Lock()
	wait := b.nextFetch.Sub(b.now())
	want := max(0, b.grant-b.stash)
	b.mu.Unlock()
	if wait > 0 && !backoff.Sleep(ctx, min(wait, 100*time.Millisecond)) {
		return ctx.Err()
	}
	got, pause, err := b.store.Grant(ctx, want, b.perSecond, b.capacity)
	b.mu.Lock()
	defer b.mu.Unlock()
	wasFailing := b.failing
	b.failing = err != nil
	if err != nil {
		if !wasFailing && ctx.Err() == nil {
			b.log.Warn("the fleet's send budget is unreachable; pushes wait", "err", err)
		}
		return err
	}
	now := b.now()
	b.stash += got
	b.fetchedAt = now
	b.nextFetch = time.Time{}
	if got < want {
		// The bucket is dry: ask again once the missing tokens have had
		// time to accrue, not in a tight loop.
		b.nextFetch = now.Add(time.Duration(float64(want-got) / b.perSecond * float64(time.Second)))
	}
	if pause > 0 {
		b.pausedUntil, b.pauseLen = now.Add(pause), pause
	}
	return nil
}

// PauseAll pauses every instance's pushes for d: this one at once, the
// others at their next grant (within stashFreshFor, or one grant's worth
// of pushes, whichever comes first). Errors are logged: this instance pauses anyway.
func (b *FleetBudget) PauseAll(d time.Duration) {
	b.mu.Lock()
	now := b.now()
	if until := now.Add(d); until.After(b.pausedUntil) {
		b.pausedUntil, b.pauseLen = until, d
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.store.PauseAll(ctx, d); err != nil {
		b.log.Error("could not pause the other instances' pushes", "pause", d, "err", err)
	}
}
