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
	restarts := chaosSize(e.opts, 1, 3)
	s, err := e.setupSteady(ctx, chaosMaxRelayStall, fmt.Sprintf("%d immediate restart(s) of postgres meanwhile", restarts))
	if err != nil {
		return nil, err
	}
	defer s.stopWatch()
	res := s.res

	var down []float64
	var afterRestart int
	slice := s.over / time.Duration(restarts)
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
	<-s.raising
	if err := s.finish(ctx, restarts*chaosCrashBound(s.tuning)); err != nil {
		return nil, err
	}
	s.stopWatch()
	res.Crashes = restarts // an immediate shutdown is a crash
	res.Restarts = restarts
	res.set("postgres_down_seconds", down)
	res.set("pushes_after_last_restart", int(res.Received)-afterRestart)
	res.check(int(res.Received) > afterRestart, "no push after the last restart: herald did not reconnect")
	return res, nil
}
