package app

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Unit tests of the adaptive concurrency rule, fed by a simulated FCM: a
// fixed round trip, a sender whose throughput is the smaller of its limit
// over the round trip and the rate limit, and explicit times.

// fcmSim drives a concurrencyRule with a simulated FCM.
type fcmSim struct {
	rule      *concurrencyRule
	now       time.Time
	perSecond float64
	carry     float64
	// limits records the limit after each window that changed it.
	limits []int
}

func newFCMSim(ratePerMinute, ceiling int) *fcmSim {
	return &fcmSim{rule: newConcurrencyRule(ratePerMinute, ceiling), now: t0, perSecond: float64(ratePerMinute) / 60}
}

// run simulates d of pushes taking rtt each, in 10 ms steps. saturated says
// whether a backlog keeps every admitted worker busy; strained whether FCM
// answers some attempts with a 5xx in every step.
func (s *fcmSim) run(d, rtt time.Duration, saturated, strained bool) {
	const step = 10 * time.Millisecond
	for end := s.now.Add(d); s.now.Before(end); s.now = s.now.Add(step) {
		s.carry += s.throughput(rtt) * step.Seconds()
		for ; s.carry >= 1; s.carry-- {
			s.rule.observe(s.now, rtt, saturated)
		}
		if strained {
			s.rule.strain(s.now)
		}
		if s.rule.tick(s.now) {
			s.limits = append(s.limits, s.rule.Limit())
		}
	}
}

// throughput is what the sender reaches at rtt with its current limit.
func (s *fcmSim) throughput(rtt time.Duration) float64 {
	return min(float64(s.rule.Limit())/rtt.Seconds(), s.perSecond)
}

func TestAdaptiveConcurrencyReachesTheRateLimitWhateverFCMsRoundTrip(t *testing.T) {
	t.Parallel()
	for _, rtt := range []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond} {
		t.Run(fmt.Sprint(rtt), func(t *testing.T) {
			t.Parallel()
			sim := newFCMSim(300_000, 2048) // 5,000/s
			sim.run(5*time.Second, rtt, true, false)
			assert.GreaterOrEqual(t, sim.throughput(rtt), 0.9*5000, "limit %d at %s", sim.rule.Limit(), rtt)
			need := 5000 * rtt.Seconds()
			assert.LessOrEqual(t, float64(sim.rule.Limit()), 1.5*need+1, "no more in flight than the rate needs, with headroom")
			// And it stays there.
			settled := sim.rule.Limit()
			sim.run(5*time.Second, rtt, true, false)
			assert.Equal(t, settled, sim.rule.Limit())
		})
	}
}

func TestAdaptiveConcurrencyGrowsWithinAFewRoundTrips(t *testing.T) {
	t.Parallel()
	sim := newFCMSim(300_000, 2048)
	require.Equal(t, concurrencyStart, sim.rule.Limit())
	sim.run(2*time.Second, 250*time.Millisecond, true, false)
	assert.GreaterOrEqual(t, sim.throughput(250*time.Millisecond), 0.9*5000,
		"at 250 ms, doubling once a round trip reaches 1,250 in flight from 32 within 2 s: limits %v", sim.limits)
}

func TestAdaptiveConcurrencyNeverExceedsItsCeiling(t *testing.T) {
	t.Parallel()
	sim := newFCMSim(600_000, 100)
	sim.run(10*time.Second, time.Second, true, false)
	assert.Equal(t, 100, sim.rule.Limit(), "10,000/s at 1 s would need 15,000")
	for _, l := range sim.limits {
		assert.LessOrEqual(t, l, 100)
	}
}

func TestAdaptiveConcurrencyDoesNotGrowWhileWorkersWaitForWork(t *testing.T) {
	t.Parallel()
	sim := newFCMSim(300_000, 2048)
	sim.run(5*time.Second, 100*time.Millisecond, false, false)
	assert.Equal(t, concurrencyStart, sim.rule.Limit(), "a trickle of pushes never used the limit it had")
}

func TestAdaptiveConcurrencyShrinksWhileFCMAnswers5xxAndRecoversAfter(t *testing.T) {
	t.Parallel()
	const rtt = 50 * time.Millisecond
	sim := newFCMSim(300_000, 2048)
	sim.run(3*time.Second, rtt, true, false)
	settled := sim.rule.Limit()
	require.Greater(t, settled, 300)

	sim.limits = nil
	sim.run(time.Second, rtt, true, true)
	require.NotEmpty(t, sim.limits)
	prev := settled
	for _, l := range sim.limits {
		assert.Less(t, l, prev, "every window with 5xx answers cuts the limit: %v", sim.limits)
		prev = l
	}
	// Windows last at least 100 ms here: at most 10 cuts of a tenth.
	assert.InDelta(t, float64(settled)*0.9*0.9*0.9*0.9*0.9*0.9*0.9*0.9*0.9*0.9, float64(sim.rule.Limit()), float64(settled)*0.25)

	sim.run(30*time.Second, rtt, true, true)
	assert.Equal(t, concurrencyFloor, sim.rule.Limit(), "a lasting strain leaves the floor")

	sim.run(3*time.Second, rtt, true, false)
	assert.Equal(t, settled, sim.rule.Limit(), "once FCM answers again, the limit the rate needs comes back")
}

func TestAdaptiveConcurrencyBacksOffWhenTheRoundTripClimbs(t *testing.T) {
	t.Parallel()
	sim := newFCMSim(300_000, 2048)
	sim.run(3*time.Second, 50*time.Millisecond, true, false)
	settled := sim.rule.Limit()

	// FCM queues: the round trip goes to 150 ms. Little's law alone would
	// triple the limit and feed the queue; the rule backs off instead.
	sim.run(2*time.Second, 150*time.Millisecond, true, false)
	assert.Less(t, sim.rule.Limit(), settled)
}

func TestWorkerGateAdmitsOnlyWorkersBelowTheLimit(t *testing.T) {
	t.Parallel()
	g := newWorkerGate(2)
	ctx := context.Background()
	assert.True(t, g.admit(ctx, 0))
	assert.True(t, g.admit(ctx, 1))

	admitted := make(chan bool)
	go func() { admitted <- g.admit(ctx, 2) }()
	select {
	case <-admitted:
		t.Fatal("worker 2 was admitted under a limit of 2")
	case <-time.After(20 * time.Millisecond):
	}
	g.set(3)
	assert.True(t, <-admitted, "raising the limit wakes the parked worker")

	cancelled, cancel := context.WithCancel(ctx)
	go func() { admitted <- g.admit(cancelled, 5) }()
	cancel()
	assert.False(t, <-admitted, "a parked worker leaves when the run ends")
}
