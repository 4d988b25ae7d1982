package chaos

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/internal/cli"
)

// chaosReplicasRateExcess is how far above the fleet's rate limit its
// busiest second may go in the long form: the target of issue 8 (the
// fleet's documented bound on grants is 3 % with three instances; pushes
// can bunch further between their grant and FCM). The short form, which CI runs under the race detector on
// busy cores, allows chaosReplicasShortRateExcess: pushes granted apart
// can leave late, when the scheduler runs their goroutines late, and
// reach the fake bunched into one second.
const (
	chaosReplicasRateExcess      = 0.05
	chaosReplicasShortRateExcess = 0.10
)

// chaosReplicasLease is the replicas' Sender.Lease, and
// chaosReplicasTakeover how soon after a replica's death the claims it held
// must be claimable again (issue 8): with Fleet's defaults (1 s heartbeats,
// dead after 5 s) about 7 s.
const (
	chaosReplicasLease    = 30 * time.Second
	chaosReplicasTakeover = 10 * time.Second
)

// chaosAppCutWorker names the connections of the replica whose database
// connections replicas cuts, so that only its backends are terminated.
const chaosAppCutWorker = chaosAppWorker + "-cut"

// runChaosReplicas runs Herald in three processes on one database, as three
// replicas of a monolith do, under one fleet-wide rate limit
// (Sender.RatePerMinute, the project's budget). While the host commits
// pushes faster than the limit lets out, the first replica is SIGKILLed
// every few seconds and restarted, and every database connection of the
// second is terminated every few seconds; the third is left alone. Nothing
// may be lost, nothing rolled back sent, duplicates stay within the bound
// of the crashes and cuts, and the fleet's busiest second stays within 5 %
// of the limit.
func runChaosReplicas(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	res := &chaosResult{}
	tuning := defaultChaosTuning()
	// Longer than the fleet takes to give a dead instance's claims back,
	// so that the takeover, not the lease's end, is what is measured.
	tuning.Lease = chaosReplicasLease
	// The limit binds: the host commits faster than the fleet may send.
	perSecond := chaosSize(e.opts, 400, 1_000)
	tuning.RatePerMinute = perSecond * 60
	deliveries := e.deliveries(2_000, 20_000)
	over := chaosSize(e.opts, 3*time.Second, 15*time.Second)
	gapLo, gapHi := chaosSize(e.opts, 600*time.Millisecond, 1500*time.Millisecond), chaosSize(e.opts, 1200*time.Millisecond, 3*time.Second)
	minKills, minCuts := chaosSize(e.opts, 2, 4), chaosSize(e.opts, 2, 4)

	load, ws, err := e.setupWorkers(ctx, tuning, tuning, tuning)
	if err != nil {
		return nil, err
	}
	killed, cutOff := ws[0], ws[1]
	cutOff.rename(chaosAppCutWorker)
	for _, w := range ws {
		if err := w.start(); err != nil {
			return nil, err
		}
	}
	e.progress("replicas pid %d (killed), %d (connections cut), %d (left alone) started under a fleet limit of %d/s; committing ~%d pushes over %s",
		killed.pid(), cutOff.pid(), ws[2].pid(), perSecond, deliveries, over)
	firstPush := time.Now()
	raising, stopRelayWatch := e.raiseSteadily(ctx, res, load, deliveries, over, chaosMaxRelayStall)
	defer stopRelayWatch()

	var kills, cuts, backendsCut, claimedAtKills, sentUnrecorded, unexpectedExits int
	seenClaims := map[chaosClaim]bool{}
	takeovers := &chaosTakeovers{}
	defer takeovers.wait()
	// Faults go on while work is left, and at least the minimum of each.
	for {
		if !cli.Sleep(ctx, e.jitter(gapLo, gapHi)) {
			return nil, ctx.Err()
		}
		for _, w := range ws {
			if died, err := w.died(); died {
				unexpectedExits++
				e.progress("a replica exited on its own: %v; restarting", err)
				if err := w.start(); err != nil {
					return nil, err
				}
			}
		}
		if chaosDone(raising) && kills >= minKills && cuts >= minCuts {
			if left, err := e.openDeliveries(ctx); err == nil && left < perSecond {
				break // the last second of work: let it finish undisturbed
			}
		}
		// Alternate: a cut, then a kill.
		if cuts <= kills {
			n, err := e.cutConnections(ctx, chaosAppCutWorker)
			if err != nil {
				return nil, fmt.Errorf("cut the connections of pid %d: %w", cutOff.pid(), err)
			}
			cuts++
			backendsCut += n
			e.progress("cut %d: terminated %d backends of pid %d; %d pushes received so far", cuts, n, cutOff.pid(), e.pushes.total())
			continue
		}
		killedAt := time.Now()
		pid, claimed, sent, err := e.killAndCount(ctx, killed, seenClaims)
		if err != nil {
			return nil, err
		}
		kills++
		claimedAtKills += claimed
		sentUnrecorded += sent
		if err := takeovers.watch(ctx, e, pid, killedAt); err != nil {
			return nil, err
		}
		if err := killed.start(); err != nil {
			return nil, err
		}
		e.progress("kill %d: SIGKILL pid %d; restarted as pid %d; %d pushes received so far", kills, pid, killed.pid(), e.pushes.total())
	}
	<-raising
	bound := (kills + cuts) * chaosCrashBound(tuning)
	stop := func() error {
		var errs []error
		for i, w := range ws {
			if died, err := w.died(); died {
				unexpectedExits++
				errs = append(errs, fmt.Errorf("replica %d exited on its own: %w", i, err))
				continue
			}
			if err := w.stop(30 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if err := load.finish(ctx, res, stop, bound); err != nil {
		return nil, err
	}
	stopRelayWatch()
	busiest := e.pushes.maxPerSecond(firstPush)
	excess := float64(busiest)/float64(perSecond) - 1
	allowed := chaosSize(e.opts, chaosReplicasShortRateExcess, chaosReplicasRateExcess)
	res.Crashes = kills
	res.Restarts = kills + unexpectedExits
	started := 0
	for _, w := range ws {
		started += w.started
	}
	res.set("processes", len(ws))
	res.set("workers_started", started)
	res.set("connection_cuts", cuts)
	res.set("backends_terminated", backendsCut)
	res.set("claimed_at_kills", claimedAtKills)
	res.set("sent_unrecorded_at_kills", sentUnrecorded)
	res.set("lease_seconds", tuning.Lease.Seconds())
	takeovers.wait()
	watched, slowest := takeovers.result()
	res.set("kills_holding_claims", watched)
	res.set("takeover_max_seconds", chaosSeconds(slowest))
	res.set("rate_limit_per_second", perSecond)
	res.set("busiest_second", busiest)
	res.set("rate_excess", math.Round(excess*1000)/1000)
	res.check(kills >= minKills, "only %d kills, want at least %d", kills, minKills)
	res.check(cuts >= minCuts, "only %d connection cuts, want at least %d", cuts, minCuts)
	res.check(backendsCut > 0, "no backend of the replica was found to terminate")
	res.check(slowest <= chaosReplicasTakeover, "a killed replica's claims came back %s after its death (promise: within %s)",
		slowest.Round(100*time.Millisecond), chaosReplicasTakeover)
	res.check(unexpectedExits == 0, "%d replicas exited without being killed", unexpectedExits)
	res.set("rate_excess_allowed", allowed)
	// In whole pushes: 420 at 400/s is 5 %, whatever float rounding says.
	res.check(float64(busiest) <= math.Floor(float64(perSecond)*(1+allowed)+1e-9),
		"the fleet's busiest second had %d pushes, %.1f%% over its limit of %d/s (allowed: %.0f%%)",
		busiest, excess*100, perSecond, allowed*100)
	return res, nil
}

// rename gives the workers' database connections another application name.
func (w *chaosWorkers) rename(appName string) {
	for i, kv := range w.env {
		if strings.HasPrefix(kv, "DATABASE_URL=") {
			w.env[i] = "DATABASE_URL=" + w.e.poolURL(appName)
		}
	}
}

// cutConnections terminates every backend of the connections named
// appName and returns how many there were.
func (e *chaosEnv) cutConnections(ctx context.Context, appName string) (int, error) {
	var n int
	err := e.admin.QueryRow(ctx, `SELECT count(*) FROM (
			SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
			WHERE application_name = $1 AND pid <> pg_backend_pid()) t`, appName).Scan(&n)
	return n, err
}

// openDeliveries counts the deliveries not final yet.
func (e *chaosEnv) openDeliveries(ctx context.Context) (int, error) {
	var n int
	err := e.admin.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries
		WHERE status IN ('pending', 'claimed', 'retry_scheduled')`).Scan(&n)
	return n, err
}

// maxPerSecond returns the most pushes that reached the fake in any one
// second (a sliding window over their arrival times, as FCM's quota counts
// them) since from.
func (c *chaosPushCounter) maxPerSecond(from time.Time) int {
	c.mu.Lock()
	times := slices.Clone(c.arrivals)
	c.mu.Unlock()
	times = slices.DeleteFunc(times, func(t time.Time) bool { return t.Before(from) })
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	best, lo := 0, 0
	for hi, t := range times {
		for !times[lo].After(t.Add(-time.Second)) {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// chaosTakeovers times how long the claims a killed replica held stay
// claimed by it, one watch per kill.
type chaosTakeovers struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	watched int
	slowest time.Duration
}

// watch finds the instance the killed process pid registered as and, if it
// still holds claims, polls in the background until none is left claimed
// by it: taken back by the fleet's leader, or expired.
func (t *chaosTakeovers) watch(ctx context.Context, e *chaosEnv, pid int, killedAt time.Time) error {
	var instance *uuid.UUID
	var held int
	err := e.admin.QueryRow(ctx, `SELECT i.id, (SELECT count(*) FROM herald_deliveries d
			WHERE d.status = 'claimed' AND d.claimed_by = i.id)
		FROM herald_instances i WHERE i.pid = $1`, pid).Scan(&instance, &held)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && held == 0) {
		return nil // it had not registered yet, or held nothing
	}
	if err != nil {
		return fmt.Errorf("claims of the killed replica: %w", err)
	}
	t.mu.Lock()
	t.watched++
	t.mu.Unlock()
	t.wg.Go(func() {
		for ctx.Err() == nil {
			var left int
			err := e.admin.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries
				WHERE status = 'claimed' AND claimed_by = $1`, *instance).Scan(&left)
			if err == nil && left == 0 {
				t.mu.Lock()
				t.slowest = max(t.slowest, time.Since(killedAt))
				t.mu.Unlock()
				return
			}
			if !cli.Sleep(ctx, 100*time.Millisecond) {
				return
			}
		}
	})
	return nil
}

func (t *chaosTakeovers) wait() { t.wg.Wait() }

// result returns how many kills left claims behind and the longest any
// took to come back.
func (t *chaosTakeovers) result() (watched int, slowest time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.watched, t.slowest
}
