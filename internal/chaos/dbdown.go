package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/herald-push/herald/internal/cli"
)

// runChaosDBDownAtStart starts the process running Herald while Postgres
// is down, as after a reboot where the application comes up first, and
// brings Postgres up some seconds later (3 s short, 10 s long). Herald must
// wait and retry, not exit, and deliver everything: the pushes committed
// before Postgres went down and those committed after it came back.
func runChaosDBDownAtStart(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	res := &chaosResult{}
	tuning := defaultChaosTuning()
	load, ws, err := e.setupWorkers(ctx, tuning)
	if err != nil {
		return nil, err
	}
	worker := ws[0]
	deliveries := e.deliveries(2_000, 20_000)
	down := e.outage(3*time.Second, 10*time.Second)
	over := chaosSize(e.opts, 3*time.Second, 10*time.Second)

	e.progress("committing %d pushes with no herald running", deliveries/2)
	load.run(ctx, chaosComments(deliveries/2), 0, 3)
	if err := e.stopPostgres(ctx); err != nil {
		return nil, err
	}
	stoppedAt := time.Now()
	if err := worker.start(); err != nil {
		return nil, err
	}
	e.progress("postgres is down; worker pid %d started; postgres comes back in %s", worker.pid(), down)
	// A worker that exits is counted and replaced, as a supervisor would:
	// the count breaks the promise, the replacement lets the run finish.
	exits := 0
	var exitErr error
	replaceDead := func(when string) error {
		if died, err := worker.died(); died {
			exits++
			exitErr = err
			e.progress("the worker exited %s: %v; starting another", when, err)
			return worker.start()
		}
		return nil
	}
	for time.Since(stoppedAt) < down {
		if err := replaceDead("while postgres was down"); err != nil {
			return nil, err
		}
		if !cli.Sleep(ctx, 100*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	if err := e.cluster.Restart(ctx, false); err != nil {
		return nil, fmt.Errorf("start postgres again: %w", err)
	}
	downFor := time.Since(stoppedAt)
	e.progress("postgres up after %s; committing %d pushes over %s", downFor.Round(time.Millisecond), deliveries/2, over)
	if err := replaceDead("before postgres came back"); err != nil {
		return nil, err
	}
	load.run(ctx, chaosComments(deliveries/2), over, 3)
	if err := replaceDead("after postgres came back"); err != nil {
		return nil, err
	}
	stop := func() error {
		if died, err := worker.died(); died {
			exits++
			exitErr = err
			return fmt.Errorf("the worker exited on its own: %w", err)
		}
		return worker.stop(30 * time.Second)
	}
	if err := load.finish(ctx, res, stop, 0); err != nil {
		return nil, err
	}
	res.Restarts = exits
	res.set("postgres_down_seconds", chaosSeconds(downFor))
	res.set("worker_exits", exits)
	if exitErr != nil {
		res.set("worker_exit", chaosErrText(exitErr))
	}
	res.check(exits == 0, "the process running herald exited %d time(s) because postgres was down at its start (promise: it waits)", exits)
	return res, nil
}

// stopPostgres shuts the scenario's Postgres down (fast shutdown) and
// waits until it is gone; Cluster.Restart starts it again.
func (e *chaosEnv) stopPostgres(ctx context.Context) error {
	var dataDir string
	if err := e.admin.QueryRow(ctx, `SHOW data_directory`).Scan(&dataDir); err != nil {
		return fmt.Errorf("find postgres' data directory: %w", err)
	}
	pidFile := filepath.Join(dataDir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("read postmaster.pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return fmt.Errorf("read postmaster.pid: %w", err)
	}
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil { // SIGINT: fast shutdown
		return fmt.Errorf("stop postgres: %w", err)
	}
	// Postgres removes its pid file when it has shut down.
	_, err = e.waitFor(ctx, 30*time.Second, "postgres to shut down", func(context.Context) (bool, error) {
		_, err := os.Stat(pidFile)
		if errors.Is(err, os.ErrNotExist) {
			return true, nil
		}
		return false, err
	})
	return err
}
