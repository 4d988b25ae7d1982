package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/outbox"
)

// chaosSetup is what most scenarios begin with: Herald in this process
// (running unless held) and the host application raising through it.
type chaosSetup struct {
	res    *chaosResult
	tuning chaosTuning
	h      *chaosHerald
	load   *chaosLoad
}

// setup makes Herald in this process with tuning and the host application
// on it, and starts Herald unless hold is set (then the scenario calls
// s.h.start itself, after building a backlog).
func (e *chaosEnv) setup(ctx context.Context, tuning chaosTuning, hold bool) (*chaosSetup, error) {
	h, err := e.newHerald(ctx, tuning)
	if err != nil {
		return nil, err
	}
	load, err := newChaosLoad(ctx, e, h.Raise)
	if err != nil {
		return nil, err
	}
	if !hold {
		h.start(ctx)
	}
	return &chaosSetup{res: &chaosResult{}, tuning: tuning, h: h, load: load}, nil
}

// setupDefault is setup with defaultChaosTuning, Herald started: the
// opening of every scenario that needs no tuning of its own.
func (e *chaosEnv) setupDefault(ctx context.Context) (*chaosSetup, error) {
	return e.setup(ctx, defaultChaosTuning(), false)
}

// raiseSteadily starts the host raising about deliveries pushes spread over
// over, with three writers, in the background, and watches the relay
// meanwhile: a stall longer than allowed fails res. raising closes once the
// host is done; stopWatch ends the watch and records the longest stall in
// res (later calls do nothing, so a scenario may also defer it).
func (e *chaosEnv) raiseSteadily(ctx context.Context, res *chaosResult, load *chaosLoad, deliveries int, over, allowed time.Duration) (raising <-chan struct{}, stopWatch func()) {
	stopWatch = e.watchRelay(res, allowed)
	return load.runAsync(ctx, chaosComments(deliveries), over, 3), stopWatch
}

// chaosSteady is a scenario set up by setupSteady: Herald in this process
// and the host raising on it steadily, in the background, while the
// scenario does harm.
type chaosSteady struct {
	*chaosSetup
	over      time.Duration   // how long the host takes to commit its pushes
	raising   <-chan struct{} // closes once the host is done
	stopWatch func()          // ends the relay watch: see raiseSteadily
}

// setupSteady is the opening of the scenarios that do harm while the host
// raises: setupDefault, then raiseSteadily with about 2,000 pushes over 5 s
// (20,000 over 20 s in the long form; -deliveries sets the count). harm
// ends the progress line: what the scenario does meanwhile. allowed is the
// longest relay stall the scenario accepts. The caller defers stopWatch.
func (e *chaosEnv) setupSteady(ctx context.Context, allowed time.Duration, harm string) (*chaosSteady, error) {
	deliveries := e.deliveries(2_000, 20_000)
	over := chaosSize(e.opts, 5*time.Second, 20*time.Second)
	s, err := e.setupDefault(ctx)
	if err != nil {
		return nil, err
	}
	e.progress("committing ~%d pushes over %s; %s", deliveries, over, harm)
	raising, stopWatch := e.raiseSteadily(ctx, s.res, s.load, deliveries, over, allowed)
	return &chaosSteady{chaosSetup: s, over: over, raising: raising, stopWatch: stopWatch}, nil
}

// setupWorkers is setup for scenarios that run Herald in chaos-worker
// processes: the host application raises with an outbox of its own, and
// each tuning gets a worker, not started yet.
func (e *chaosEnv) setupWorkers(ctx context.Context, tunings ...chaosTuning) (*chaosLoad, []*chaosWorkers, error) {
	load, err := newChaosLoad(ctx, e, outbox.New(chaosRules(), adapters.NotificationWriterIn, outbox.Config{}).Raise)
	if err != nil {
		return nil, nil, err
	}
	workers := make([]*chaosWorkers, len(tunings))
	for i, t := range tunings {
		if workers[i], err = newChaosWorkers(e, t); err != nil {
			return nil, nil, err
		}
	}
	return load, workers, nil
}

// finish checks that Herald's Run did not return on its own, then waits for
// Herald to deliver everything and does the accounting, with the given
// duplicates bound.
func (s *chaosSetup) finish(ctx context.Context, bound int) error {
	if s.h.stopped() {
		s.res.check(false, "%v: %v", errChaosHeraldStopped, s.h.err)
	}
	return s.load.finish(ctx, s.res, s.h.stop, bound)
}

// holdRelay opens an admin transaction with a transaction id: the relay
// sees no event committed after it until release is called (facts: the
// outbox is read below the cluster's oldest running transaction). Scenarios
// use it to hand Herald a backlog all at once while it runs.
func (e *chaosEnv) holdRelay(ctx context.Context) (release func(), err error) {
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("hold the relay: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("hold the relay: %w", err)
	}
	return func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }, nil
}

// waitFor polls cond every 20 ms until it is true, and returns how long
// that took; it fails after within. Database errors are waited out.
func (e *chaosEnv) waitFor(ctx context.Context, within time.Duration, what string, cond func(context.Context) (bool, error)) (time.Duration, error) {
	began := time.Now()
	var lastErr error
	for {
		ok, err := cond(ctx)
		if err == nil && ok {
			return time.Since(began), nil
		}
		if err != nil {
			lastErr = err
		}
		if time.Since(began) > within {
			return 0, fmt.Errorf("%s: not after %s (last error: %v)", what, within, lastErr)
		}
		if !cli.Sleep(ctx, 20*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
}
