package fleettest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/internal/fakefcm"
)

// TestAProjectWide429AnsweredToOneProcessPausesEveryProcess: three Herald
// processes push; FCM answers one single push (so one process) with
// QUOTA_EXCEEDED and Retry-After 3s; no process pushes anything from
// shortly after that answer until the 3 s are over, and then they resume.
func TestAProjectWide429AnsweredToOneProcessPausesEveryProcess(t *testing.T) {
	url, pool := newDatabase(t)
	fake, pushes := startFake(t)
	// QuotaDevices 1: one 429 is evidently project-wide (the default, 3,
	// waits for three devices; which process decides is not the point).
	f := newFleet(t, url, fake, workerTuning{RatePerMinute: fleetRate * 60, MaxInFlight: 64, BatchSize: 200, QuotaDevices: 1})
	for range 3 {
		f.start()
	}
	waitInstances(t, pool, 3)
	tokens := backlog(t, pool, "quota", fleetRate*8)
	require.Eventually(t, func() bool { return pushes.count() >= fleetRate }, 30*time.Second, 10*time.Millisecond,
		"pushes flow")

	const retryAfter = 3 * time.Second
	fake.FailAll(fakefcm.Fault{Code: fakefcm.FaultQuotaExceeded, RetryAfter: retryAfter, Times: 1})
	require.Eventually(t, func() bool { return pushes.count() >= len(tokens) }, 60*time.Second, 50*time.Millisecond,
		"the backlog is pushed once the pause is over")
	// The pause starts when the 429 is answered, as the fake saw it: on a
	// loaded machine the next push may come well after FailAll.
	answered, ok := pushes.faulted()
	require.True(t, ok, "the fake answered one push with QUOTA_EXCEEDED")

	// The other processes learn of the pause at their next grant: within
	// 100 ms or one grant of pushes. Pushes already on the wire land too.
	const propagation = 250 * time.Millisecond
	var during, lastBefore, firstAfter int
	for _, at := range pushes.times() {
		switch since := at.Sub(answered); {
		case since < 0:
			lastBefore++
		case since < propagation:
			firstAfter++
		case since < retryAfter:
			during++
		}
	}
	t.Logf("pushes: %d before the 429, %d in the %s after it, %d during the rest of the %s pause",
		lastBefore, firstAfter, propagation, during, retryAfter)
	assert.Zero(t, during, "no process pushes during the pause")
	lost, duplicates := pushes.tally(tokens)
	assert.Zero(t, lost)
	assert.Zero(t, duplicates)
}
