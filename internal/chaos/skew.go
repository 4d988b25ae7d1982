package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// chaosClockSkew is how far ahead clock-skew sets the second process's clock.
const chaosClockSkew = 30 * time.Second

// runChaosClockSkew runs Herald in two processes on one database, the
// second with its clock 30 s ahead (HERALD_CHAOS_CLOCK_OFFSET), as when
// one node's NTP is broken. Leases and due times must not depend on a
// process's own clock: a lease taken by one process is not expired for the
// other, so nothing is pushed twice, and nothing is lost.
func runChaosClockSkew(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	res := &chaosResult{}
	right := defaultChaosTuning()
	ahead := right
	ahead.ClockOffset = chaosClockSkew
	load, workers, err := e.setupWorkers(ctx, right, ahead)
	if err != nil {
		return nil, err
	}
	deliveries := e.deliveries(2_000, 20_000)
	over := chaosSize(e.opts, 5*time.Second, 20*time.Second)
	for _, w := range workers {
		if err := w.start(); err != nil {
			return nil, err
		}
	}
	e.progress("workers pid %d (clock right) and pid %d (clock %s ahead) started; committing ~%d pushes over %s",
		workers[0].pid(), workers[1].pid(), chaosClockSkew, deliveries, over)
	raising, stopRelayWatch := e.raiseSteadily(ctx, res, load, deliveries, over, chaosMaxRelayStall)
	defer stopRelayWatch()
	<-raising
	exits := 0
	stop := func() error {
		var errs []error
		for i, w := range workers {
			if died, err := w.died(); died {
				exits++
				errs = append(errs, fmt.Errorf("worker %d exited on its own: %w", i, err))
				continue
			}
			if err := w.stop(30 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	if err := load.finish(ctx, res, stop, 0); err != nil {
		return nil, err
	}
	stopRelayWatch()
	res.set("processes", len(workers))
	res.set("clock_offset_seconds", chaosClockSkew.Seconds())
	res.set("lease_seconds", right.Lease.Seconds())
	res.check(exits == 0, "%d worker(s) exited on their own", exits)
	return res, nil
}
