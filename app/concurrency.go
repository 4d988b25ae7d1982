package app

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// The adaptive concurrency of a Sender whose MaxInFlight is unset.
//
// Throughput is pushes in flight divided by FCM's round trip (Little's law),
// so the concurrency that reaches RatePerMinute is the rate per second times
// the round trip. concurrencyRule measures the round trip of every push in
// windows of at least one round trip, and moves the limit towards that
// concurrency with some headroom, doubling at most per window while every
// worker is busy, and easing down when the rate needs fewer. Two signals
// of an FCM under strain make it back off multiplicatively, at most once a
// round trip: 429 (project-wide) or 5xx answers, and a round trip more than
// latencyTolerance times its baseline (the lowest window mean lately, which
// drifts up slowly so that a lasting change of route is accepted).
//
// The rule is pure: it is fed samples and the time, and never reads a clock.

const (
	// concurrencyStart is the limit before any round trip was measured.
	concurrencyStart = 32
	// concurrencyFloor is the least the limit shrinks to.
	concurrencyFloor = 4
	// concurrencyHeadroom multiplies the Little's-law concurrency: a
	// worker also spends time outside its push (checks, the queue), and
	// round trips vary.
	concurrencyHeadroom = 1.5
	// latencyTolerance: a window whose mean round trip exceeds this many
	// times the baseline means FCM (or the path to it) is queueing.
	latencyTolerance = 2.0
	// backoffFactor multiplies the limit on a sign of strain.
	backoffFactor = 0.9
	// easeFactor is the most the limit falls per window when the rate
	// needs fewer pushes in flight.
	easeFactor = 0.95
	// baselineDrift is how much of the gap to a higher window mean the
	// baseline closes per window.
	baselineDrift = 0.02
	// minWindow and minWindowSamples: a window closes after at least one
	// mean round trip, minWindow, and minWindowSamples pushes (or
	// maxWindow, whatever it holds).
	minWindow        = 100 * time.Millisecond
	minWindowSamples = 8
	maxWindow        = time.Second
)

// concurrencyRule decides the adaptive limit. Not safe for concurrent use.
type concurrencyRule struct {
	perSecond      float64
	floor, ceiling float64
	limit          float64

	baseline time.Duration // 0 until the first window closed
	lastMean time.Duration
	lastCut  time.Time

	// The open window.
	start     time.Time
	n         int
	sum       time.Duration
	strained  bool
	saturated bool
}

func newConcurrencyRule(ratePerMinute, ceiling int) *concurrencyRule {
	c := float64(max(1, ceiling))
	return &concurrencyRule{
		perSecond: float64(ratePerMinute) / 60,
		floor:     min(concurrencyFloor, c),
		ceiling:   c,
		limit:     min(concurrencyStart, c),
	}
}

// Limit is the number of pushes that may be in flight now.
func (r *concurrencyRule) Limit() int { return int(math.Round(r.limit)) }

// observe adds one push's round trip, ended at now, and whether every
// worker the limit allows was busy (the limit held the sender back).
func (r *concurrencyRule) observe(now time.Time, rtt time.Duration, saturated bool) {
	r.open(now)
	r.n++
	r.sum += rtt
	r.saturated = r.saturated || saturated
}

// strain records a sign that FCM is overloaded: a project-wide 429, or a
// 5xx answer to an attempt.
func (r *concurrencyRule) strain(now time.Time) {
	r.open(now)
	r.strained = true
}

func (r *concurrencyRule) open(now time.Time) {
	if r.start.IsZero() {
		r.start = now
	}
}

// tick closes the window if it is due at now and adjusts the limit. It
// reports whether the limit changed.
func (r *concurrencyRule) tick(now time.Time) bool {
	if r.start.IsZero() {
		return false
	}
	age := now.Sub(r.start)
	due := age >= max(minWindow, r.lastMean) && r.n >= minWindowSamples
	if !due && (age < maxWindow || (r.n == 0 && !r.strained)) {
		return false
	}
	before := r.Limit()
	var mean time.Duration
	if r.n > 0 {
		mean = r.sum / time.Duration(r.n)
		r.lastMean = mean
		switch {
		case r.baseline == 0 || mean < r.baseline:
			r.baseline = mean
		default:
			r.baseline += time.Duration(float64(mean-r.baseline) * baselineDrift)
		}
	}
	// One cut per round trip: the pushes out when FCM strained were
	// sent at the old limit.
	canCut := r.lastCut.IsZero() || now.Sub(r.lastCut) >= max(minWindow, r.lastMean)
	switch {
	case r.strained || (mean > 0 && float64(mean) > latencyTolerance*float64(r.baseline)):
		if canCut {
			r.limit = max(r.floor, r.limit*backoffFactor)
			r.lastCut = now
		}
	case mean > 0:
		target := min(r.ceiling, max(r.floor, r.perSecond*mean.Seconds()*concurrencyHeadroom))
		switch {
		case r.limit < target && r.saturated:
			r.limit = min(target, r.limit*2)
		case r.limit > target:
			r.limit = max(target, r.limit*easeFactor)
		}
	}
	r.start, r.n, r.sum, r.strained, r.saturated = time.Time{}, 0, 0, false, false
	return r.Limit() != before
}

// workerGate admits worker i to take a delivery only while i is below the
// current limit. Workers above it finish their push and park. Changing the
// limit is rare (at most once per window); admitting is one atomic load.
type workerGate struct {
	limit   atomic.Int64
	mu      sync.Mutex
	changed chan struct{} // closed and replaced when the limit changes
}

func newWorkerGate(limit int) *workerGate {
	g := &workerGate{changed: make(chan struct{})}
	g.limit.Store(int64(limit))
	return g
}

func (g *workerGate) set(limit int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.limit.Swap(int64(limit)) != int64(limit) {
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

// admit waits until worker i may work. It returns false if ctx ended.
func (g *workerGate) admit(ctx context.Context, i int) bool {
	for {
		if int64(i) < g.limit.Load() {
			return true
		}
		g.mu.Lock()
		ch := g.changed
		admitted := int64(i) < g.limit.Load()
		g.mu.Unlock()
		if admitted {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}
