package app

import (
	"testing"
	"time"
)

// The claim loop's pace rule, on its own: how many deliveries a sender may
// claim given how fast its claimed deliveries go through the send budget.

func TestBeforeItsPaceIsKnownASenderClaimsATenthOfASecondAtItsConfiguredRate(t *testing.T) {
	m := paceMeter{ceiling: 1000}
	if got := m.room(time.Unix(0, 0), 0, 0); got != 100 {
		t.Fatalf("room with nothing waiting at 1,000/s = %d, want 100", got)
	}
}

func TestASenderGivenAThirdOfTheRateClaimsAThirdAsMuch(t *testing.T) {
	m := paceMeter{ceiling: 3000}
	at := time.Unix(0, 0)
	m.room(at, 0, 300)
	passed := int64(0)
	// 1,000 a second go through the budget while 300 wait.
	for range 20 {
		at = at.Add(100 * time.Millisecond)
		passed += 100
		m.room(at, passed, 300)
	}
	if got := m.room(at, passed, 40); got != 60 {
		t.Fatalf("room with 40 waiting at a measured 1,000/s = %d, want 60 (a tenth of a second's pushes, 100, less those waiting)", got)
	}
	if got := m.room(at, passed, 51); got != 0 {
		t.Fatalf("room with 51 of 100 waiting = %d, want 0 until half have gone", got)
	}
}

func TestASenderWhoseQueueRanDryIsNotHeldToThePaceOfItsSupply(t *testing.T) {
	m := paceMeter{ceiling: 5000}
	at := time.Unix(0, 0)
	m.room(at, 0, 0)
	// Only 50 a second were due: the queue ran dry each time.
	for i := range 20 {
		at = at.Add(100 * time.Millisecond)
		m.room(at, int64(5*(i+1)), 0)
	}
	if got := m.room(at, 100, 0); got != 500 {
		t.Fatalf("room after a quiet spell = %d, want 500 (a tenth of a second at the configured 5,000/s)", got)
	}
}

func TestASenderKeepsAtLeastAFewDozenDeliveriesClaimed(t *testing.T) {
	m := paceMeter{ceiling: 10}
	if got := m.room(time.Unix(0, 0), 0, 0); got != minHeld {
		t.Fatalf("room at 10/s = %d, want the floor %d", got, minHeld)
	}
}

func TestASenderWhoseClaimsTakeLongerThanHalfItsHoldKeepsWhatLastsTwoClaims(t *testing.T) {
	m := paceMeter{ceiling: 1000}
	m.claimed(90 * time.Millisecond)
	// Two claims and the loop's ticks at 1,000/s: 200 pushes, not 100,
	// so that the half left when a claim starts lasts until it lands.
	if got := m.room(time.Unix(0, 0), 0, 0); got != 200 {
		t.Fatalf("room with claims of 90 ms at 1,000/s = %d, want 200", got)
	}
	fast := paceMeter{ceiling: 1000}
	fast.claimed(5 * time.Millisecond)
	if got := fast.room(time.Unix(0, 0), 0, 0); got != 100 {
		t.Fatalf("room with claims of 5 ms at 1,000/s = %d, want 100 (a tenth of a second)", got)
	}
}
