package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-push/herald/internal/cli"
)

// runChaosPostgresRestart restarts the scenario's Postgres in immediate
// mode (every backend dies at once, then crash recovery) while the host
// commits events and Herald relays and sends them in this process. Herald
// is not told: its pools must find out and reconnect by themselves.
func runChaosPostgresRestart(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	tuning := defaultChaosTuning()
	deliveries := e.deliveries(2_000, 20_000)
	restarts := chaosSize(e.opts, 1, 3)
	over := chaosSize(e.opts, 5*time.Second, 20*time.Second)

	s, err := e.setup(ctx, tuning, false)
	if err != nil {
		return nil, err
	}
	res, load := s.res, s.load
	e.progress("committing ~%d pushes over %s; %d immediate restart(s) of postgres meanwhile", deliveries, over, restarts)
	stopRelayWatch := e.watchRelay(res)
	defer stopRelayWatch()
	raising := load.runAsync(ctx, chaosComments(deliveries), over, 3)

	var down []float64
	var afterRestart int
	slice := over / time.Duration(restarts)
	for i := range restarts {
		// Somewhere in the middle of this restart's share of the run.
		if !cli.Sleep(ctx, e.jitter(slice/3, 2*slice/3)) {
			return nil, ctx.Err()
		}
		before := e.pushes.total()
		began := time.Now()
		if err := e.cluster.Restart(ctx, true); err != nil {
			return nil, fmt.Errorf("restart postgres: %w", err)
		}
		took := time.Since(began)
		afterRestart = e.pushes.total()
		down = append(down, chaosSeconds(took))
		e.progress("restart %d: postgres shut down in immediate mode and back in %s (%d pushes received before)",
			i+1, took.Round(time.Millisecond), before)
		if i < restarts-1 && !cli.Sleep(ctx, slice/3) {
			return nil, ctx.Err()
		}
	}
	<-raising
	if err := s.finish(ctx, restarts*chaosCrashBound(tuning)); err != nil {
		return nil, err
	}
	stopRelayWatch()
	res.Crashes = restarts // an immediate shutdown is a crash
	res.Restarts = restarts
	res.set("postgres_down_seconds", down)
	res.set("pushes_after_last_restart", int(res.Received)-afterRestart)
	res.check(int(res.Received) > afterRestart, "no push after the last restart: herald did not reconnect")
	return res, nil
}
