package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/internal/backlog"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/notification"
)

// chaosCrashBound is how many pushes one crash can duplicate: the
// deliveries a process holds claimed whose outcome is not recorded yet. A
// sender has at most MaxInFlight pushes in flight, but a finished push frees
// its slot before its outcome is written, so up to MaxInFlight+BatchSize
// outcomes can wait in its queue and BatchSize more in the write under way.
// Each of those was accepted by FCM and is pushed again when its lease
// expires.
func chaosCrashBound(t chaosTuning) int { return 2*t.MaxInFlight + 2*t.BatchSize }

// runChaosSigkill kills the process running Herald's relay and sender with
// SIGKILL at random moments while the host commits events, restarts it each
// time, and lets a last one drain.
func runChaosSigkill(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	res := &chaosResult{}
	tuning := defaultChaosTuning()
	tuning.Lease = 2 * time.Second // expired claims come back quickly
	deliveries := e.deliveries(2_000, 20_000)
	minKills := chaosSize(e.opts, 3, 10)
	gapLo, gapHi := chaosSize(e.opts, 300*time.Millisecond, 500*time.Millisecond), chaosSize(e.opts, 1200*time.Millisecond, 2*time.Second)
	// Raising lasts long enough for the kills to fall while work is under way.
	over := chaosSize(e.opts, 5*time.Second, 20*time.Second)

	load, ws, err := e.setupWorkers(ctx, tuning)
	if err != nil {
		return nil, err
	}
	workers := ws[0]
	// Some authors are in quiet hours until the middle of the run: their
	// pushes come due while processes are being killed.
	quietUntil, quietTokens, err := e.quietAuthors(ctx, chaosQuietAuthors, over/2)
	if err != nil {
		return nil, err
	}
	e.pushes.watch(quietTokens...)
	if err := workers.start(); err != nil {
		return nil, err
	}
	e.progress("worker pid %d started; committing ~%d pushes over %s, killing every %s-%s, at least %d times",
		workers.pid(), deliveries, over, gapLo, gapHi, minKills)
	raising, stopRelayWatch := e.raiseSteadily(ctx, res, load, deliveries, over, chaosMaxRelayStall)
	defer stopRelayWatch()
	// Scheduled and collapsing notifications in flight too (issue 10):
	// nothing early, nothing lost, nothing superseded pushed.
	load.allowEnds(notification.StatusSuperseded)
	features := startFeatureLoad(ctx, e, load, over)

	var kills, claimedAtKills, sentUnrecorded, unexpectedExits int
	seenClaims := map[chaosClaim]bool{}
	for {
		if !cli.Sleep(ctx, e.jitter(gapLo, gapHi)) {
			return nil, ctx.Err()
		}
		if died, err := workers.died(); died {
			unexpectedExits++
			e.progress("worker exited on its own: %v; restarting", err)
			if err := workers.start(); err != nil {
				return nil, err
			}
			continue
		}
		if chaosDone(raising) {
			if kills >= minKills {
				break
			}
			// Kills must fall during the run: if the work is done, commit more.
			if idle, err := backlog.Idle(ctx, e.admin); err == nil && idle {
				raising = load.runAsync(ctx, chaosComments(deliveries/10), over/10, 3)
			}
		}
		pid, claimed, sent, err := e.killAndCount(ctx, workers, seenClaims)
		if err != nil {
			return nil, err
		}
		kills++
		claimedAtKills += claimed
		sentUnrecorded += sent
		if err := workers.start(); err != nil {
			return nil, err
		}
		e.progress("kill %d: SIGKILL pid %d holding %d new claims (%d of pushes fcm already accepted); restarted as pid %d; %d pushes received so far",
			kills, pid, claimed, sent, workers.pid(), e.pushes.total())
	}
	<-raising
	<-features.done
	bound := kills * chaosCrashBound(tuning)
	if err := load.finish(ctx, res, func() error { return workers.stop(30 * time.Second) }, bound); err != nil {
		return nil, err
	}
	if err := features.check(ctx, e, res, claimedDeliveries(seenClaims)); err != nil {
		return nil, err
	}
	stopRelayWatch()
	e.checkQuiet(res, quietUntil)
	res.Crashes = kills
	res.Restarts = kills + unexpectedExits
	res.set("min_kills", minKills)
	res.set("workers_started", workers.started)
	res.set("claimed_at_kills", claimedAtKills)
	res.set("sent_unrecorded_at_kills", sentUnrecorded)
	res.set("lease_seconds", tuning.Lease.Seconds())
	res.set("max_in_flight", tuning.MaxInFlight)
	res.set("batch_size", tuning.BatchSize)
	res.check(kills >= minKills, "only %d kills, want at least %d", kills, minKills)
	res.check(unexpectedExits == 0, "%d workers exited without being killed", unexpectedExits)
	// Only a push accepted but not recorded when its process died may be
	// sent again.
	res.check(res.Duplicates <= sentUnrecorded, "%d duplicates, but only %d pushes were accepted and unrecorded at the kills",
		res.Duplicates, sentUnrecorded)
	return res, nil
}

// chaosClaim is one claim of one delivery.
type chaosClaim struct {
	delivery int64
	claim    uuid.UUID
}

// chaosInFlightSettle is how long after a kill the count of pushes FCM
// accepted waits, well over the fake FCM's 10 ms latency.
const chaosInFlightSettle = 200 * time.Millisecond

// killAndCount SIGKILLs w and counts the claims it left (claimedAtKill).
// Requests the process had already written when it died still reach the
// fake, which accepts them after its latency: they are counted as accepted
// at the kill (they are sent again after their lease). The caller restarts
// w only after the count, so the claims do not change meanwhile.
func (e *chaosEnv) killAndCount(ctx context.Context, w *chaosWorkers, seen map[chaosClaim]bool) (pid, claimed, sent int, err error) {
	pid = w.pid()
	if err := w.kill(); err != nil {
		return pid, 0, 0, fmt.Errorf("kill pid %d: %w", pid, err)
	}
	if !cli.Sleep(ctx, chaosInFlightSettle) {
		return pid, 0, 0, ctx.Err()
	}
	claimed, sent, err = e.claimedAtKill(ctx, seen)
	return pid, claimed, sent, err
}

// claimedAtKill looks, right after a kill, at the claims held by dead
// processes (they come back when their leases expire) that it has not seen
// at an earlier kill, and returns how many there are and how many of them
// are of pushes FCM already accepted: those are pushed again. A claim that
// has not expired at the next kill is counted once.
func (e *chaosEnv) claimedAtKill(ctx context.Context, seen map[chaosClaim]bool) (claimed, sent int, err error) {
	rows, err := e.admin.Query(ctx, `SELECT d.id, d.claim_id, n.data->>'comment_id', d.token
		FROM herald_deliveries d JOIN herald_notifications n ON n.id = d.notification_id
		WHERE d.status = 'claimed'`)
	if err != nil {
		return 0, 0, fmt.Errorf("list claimed deliveries: %w", err)
	}
	var c chaosClaim
	var k chaosPushKey
	_, err = pgx.ForEachRow(rows, []any{&c.delivery, &c.claim, &k.comment, &k.token}, func() error {
		if seen[c] {
			return nil
		}
		seen[c] = true
		claimed++
		if e.pushes.count(k) > 0 {
			sent++
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("list claimed deliveries: %w", err)
	}
	return claimed, sent, nil
}

// deliveries returns the pushes a scenario commits: -deliveries, or its
// own size.
func (e *chaosEnv) deliveries(short, long int) int {
	if e.opts.deliveries > 0 {
		return e.opts.deliveries
	}
	return chaosSize(e.opts, short, long)
}

// chaosDone reports whether ch is closed.
func chaosDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
