package fleettest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fleetRate is the rate limit of the fleet tests, pushes a second: modest,
// so that three Herald processes reach it on a shared two-core machine.
const fleetRate = 600

// TestTheFleetsBusiestSecondStaysWithinFivePercentOfTheRateLimit: one, two
// and three Herald processes drain a backlog bigger than the rate allows
// in the run, and together never push more than the rate limit plus 5 %
// in any one second (sliding), while still using the budget.
func TestTheFleetsBusiestSecondStaysWithinFivePercentOfTheRateLimit(t *testing.T) {
	for _, processes := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("%d processes", processes), func(t *testing.T) {
			url, pool := newDatabase(t)
			fake, pushes := startFake(t)
			f := newFleet(t, url, fake, workerTuning{RatePerMinute: fleetRate * 60, MaxInFlight: 64, BatchSize: 200})
			workers := make([]*worker, processes)
			for i := range workers {
				workers[i] = f.start()
			}
			waitInstances(t, pool, processes)

			const seconds = 6
			tokens := backlog(t, pool, "rate", fleetRate*seconds)
			require.Eventually(t, func() bool { return pushes.count() >= len(tokens) }, 60*time.Second,
				50*time.Millisecond, "the backlog is pushed")
			for _, w := range workers {
				w.stop(t)
			}

			// The limit governs when pushes leave the processes; where they
			// reach the fake, the loaded machine's scheduling adds bunching
			// (logged, as FCM's own network would).
			times := readSends(t, f.sends)
			require.Len(t, times, len(tokens), "one request per push")
			busiest, at := busiestSecond(times)
			arrivals, _ := busiestSecond(pushes.times())
			mean := float64(len(times)-1) / times[len(times)-1].Sub(times[0]).Seconds()
			lost, duplicates := pushes.tally(tokens)
			t.Logf("%d processes, rate limit %d/s: busiest second %d sent (%.1f%% of the limit, from %s), %d arrived at the fake (%.1f%%), mean %.0f/s, lost %d, duplicates %d",
				processes, fleetRate, busiest, 100*float64(busiest)/fleetRate, at.Round(time.Millisecond),
				arrivals, 100*float64(arrivals)/fleetRate, mean, lost, duplicates)
			assert.Zero(t, lost)
			assert.Zero(t, duplicates)
			if raceDetector {
				// Pushes that took their token are delayed by a starved
				// process and land bunched; .ci/run runs this test without
				// -race as well, where the figures below must hold.
				t.Log("race detector on: the rate figures are logged, not checked")
				return
			}
			assert.LessOrEqual(t, busiest, fleetRate*105/100, "the fleet's busiest second is within 5%% of the limit")
			assert.GreaterOrEqual(t, mean, fleetRate*0.8, "the fleet uses its budget")
		})
	}
}
