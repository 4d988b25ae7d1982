package chaos

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/cli"
)

// runChaosLongTransaction leaves a host transaction open (it wrote a row,
// so it has a transaction id) while others commit events. The relay cannot
// see events committed after it began until it ends (facts: the outbox
// reads below the cluster's oldest running transaction); Herald must say
// so, in a warning and in RelayStats, naming the transaction's age and
// backend. Everything is delivered once it ends.
func runChaosLongTransaction(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	holdFor := e.outage(3*time.Second, 10*time.Second)
	tuning := defaultChaosTuning()
	tuning.LongTransactionWarning = chaosSize(e.opts, time.Second, 5*time.Second)
	deliveries := e.deliveries(2_000, 20_000)

	s, err := e.setup(ctx, tuning, false)
	if err != nil {
		return nil, err
	}
	res, h, load := s.res, s.h, s.load
	e.progress("committing %d pushes with no long transaction", deliveries/4)
	load.run(ctx, chaosComments(deliveries/4), chaosSize(e.opts, time.Second, 4*time.Second), 3)
	if err := e.waitIdle(ctx, e.drainTimeout()); err != nil {
		return nil, err
	}

	// A host batch job: it wrote its row and raised its event, then takes
	// its time.
	id, ev := load.next()
	tx, err := load.writeComment(ctx, id, ev)
	if err != nil {
		return nil, fmt.Errorf("open the long transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	var pid int64
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return nil, err
	}
	opened := time.Now()
	receivedAtOpen := e.pushes.total()
	e.progress("host transaction open in backend %d for %s (warning after %s); committing %d pushes meanwhile",
		pid, holdFor, tuning.LongTransactionWarning, deliveries/2)

	var mu sync.Mutex
	var maxAge time.Duration
	reportedPIDs := map[int64]bool{}
	stopWatch := chaosEvery(50*time.Millisecond, func(time.Time) {
		stats := h.Stats().Relay
		age, rpid := stats.OldestTransactionAge, int64(stats.OldestTransactionPID)
		mu.Lock()
		defer mu.Unlock()
		maxAge = max(maxAge, age)
		if age > 0 {
			reportedPIDs[rpid] = true
		}
	})
	defer stopWatch()
	load.run(ctx, chaosComments(deliveries/2), holdFor*3/4, 3)
	cli.Sleep(ctx, time.Until(opened.Add(holdFor)))
	deliveredWhileOpen := e.pushes.total() - receivedAtOpen
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit the long transaction: %w", err)
	}
	openFor := time.Since(opened)
	stopWatch()
	e.progress("long transaction committed after %s; %d pushes were delivered while it was open",
		openFor.Round(time.Millisecond), deliveredWhileOpen)
	load.run(ctx, chaosComments(deliveries/4), chaosSize(e.opts, time.Second, 4*time.Second), 3)
	if err := s.finish(ctx, 0); err != nil {
		return nil, err
	}

	warnings, namesPID := 0, false
	for _, w := range e.logs.warnings() {
		if !strings.Contains(strings.ToLower(w.Message), "transaction") || strings.Contains(w.Message, "dead letter") {
			continue
		}
		warnings++
		for _, v := range w.Attrs {
			namesPID = namesPID || v.String() == strconv.FormatInt(pid, 10)
		}
	}
	mu.Lock()
	pidReported := reportedPIDs[pid]
	ageReported := maxAge
	mu.Unlock()

	res.set("transaction_open_seconds", chaosSeconds(openFor))
	res.set("blocking_pid", pid)
	res.set("warning_after_seconds", tuning.LongTransactionWarning.Seconds())
	res.set("delivered_while_open", deliveredWhileOpen)
	res.set("reported_age_max_seconds", chaosSeconds(ageReported))
	res.set("reported_pid", pidReported)
	res.set("warnings_logged", warnings)
	res.set("warning_names_pid", namesPID)
	res.check(ageReported >= tuning.LongTransactionWarning, "RelayStats.OldestTransactionAge peaked at %s, below the %s warning threshold, for a transaction open %s",
		ageReported, tuning.LongTransactionWarning, openFor.Round(time.Millisecond))
	res.check(pidReported, "RelayStats never named the blocking backend (pid %d)", pid)
	res.check(warnings > 0, "no warning about the long transaction was logged")
	return res, nil
}
