package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/herald-push/herald/internal/cli"
)

// runChaosConnectionCut terminates, again and again, the backend of a host
// transaction that has written its row and raised its event but not
// committed, together with every backend of Herald's pool (relay
// transactions, claims, outcome writes, the LISTEN connection) and of any
// other host transaction under way. The cut transaction must leave nothing
// behind; Herald must recover by itself; nothing committed is lost.
func runChaosConnectionCut(ctx context.Context, e *chaosEnv) (*chaosResult, error) {
	cuts := chaosSize(e.opts, 3, 10)
	s, err := e.setupSteady(ctx, chaosMaxRelayStall,
		fmt.Sprintf("%d cuts meanwhile, the first while the relay is inside its transaction", cuts))
	if err != nil {
		return nil, err
	}
	defer s.stopWatch()
	res, load := s.res, s.load

	var heraldCut, heraldCutInTx, hostCut, victimsCommitted, partial, victimsMissed int
	relayCaught := false
	slice := s.over / time.Duration(cuts)
	for i := range cuts {
		if !cli.Sleep(ctx, e.jitter(slice/2, slice)) {
			return nil, ctx.Err()
		}
		var release func()
		if i == 0 {
			// Chance decides what the other cuts hit; this one surely hits
			// the relay in the middle of expanding an event.
			if release, err = e.holdRelayInExpansion(ctx); err != nil {
				return nil, err
			}
			relayCaught = true
		}
		c, err := e.cut(ctx, load)
		if release != nil {
			release()
		}
		if err != nil {
			return nil, fmt.Errorf("cut %d: %w", i+1, err)
		}
		heraldCut += c.herald
		heraldCutInTx += c.heraldInTx
		hostCut += c.host
		partial += c.partial
		if c.committed {
			victimsCommitted++
		}
		if !c.victimCut {
			victimsMissed++
		}
		e.progress("cut %d: terminated %d herald backends (%d in a transaction) and %d host backends; the half-done transaction left %d rows; %d pushes received so far",
			i+1, c.herald, c.heraldInTx, c.host, c.partial, e.pushes.total())
	}
	<-s.raising
	if err := s.finish(ctx, cuts*chaosCrashBound(s.tuning)); err != nil {
		return nil, err
	}
	s.stopWatch()
	res.set("cuts", cuts)
	res.set("relay_cut_mid_expansion", relayCaught)
	res.set("herald_backends_terminated", heraldCut)
	res.set("herald_backends_terminated_in_transaction", heraldCutInTx)
	res.set("host_backends_terminated", hostCut)
	res.set("partial_state_rows", partial)
	res.check(victimsMissed == 0, "%d half-done host transactions were not found to terminate", victimsMissed)
	res.check(victimsCommitted == 0, "%d terminated host transactions committed anyway", victimsCommitted)
	res.check(partial == 0, "terminated host transactions left %d rows", partial)
	res.check(heraldCut > 0, "no herald connection was found to terminate")
	return res, nil
}

// chaosCutOutcome is what one cut did.
type chaosCutOutcome struct {
	herald, heraldInTx, host int
	victimCut                bool // the half-done transaction's backend was terminated
	committed                bool // its commit succeeded anyway
	partial                  int  // rows it left: comment, notification, outbox message
}

// cut opens a host transaction that writes a comment and raises its event,
// terminates its backend together with Herald's and the other host
// transactions', then tries to commit it and looks for what it left.
func (e *chaosEnv) cut(ctx context.Context, load *chaosLoad) (chaosCutOutcome, error) {
	var out chaosCutOutcome
	id, ev := load.next()
	load.forbid(id)
	tx, err := load.writeComment(ctx, id, ev)
	if err != nil {
		return out, fmt.Errorf("write the half-done transaction: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // the connection is gone
	var victim int
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&victim); err != nil {
		return out, err
	}
	// The victims are chosen first (MATERIALIZED: the filter must not be
	// reordered after the termination); pg_terminate_backend with a timeout
	// waits until each is gone.
	rows, err := e.admin.Query(ctx, `
		WITH victims AS MATERIALIZED (
			SELECT pid, application_name, backend_xid IS NOT NULL OR state = 'active' AS busy
			FROM pg_stat_activity
			WHERE pid <> pg_backend_pid()
			  AND (application_name = $1 OR (application_name = $2 AND xact_start IS NOT NULL))
		)
		SELECT pid, application_name, busy FROM victims WHERE pg_terminate_backend(pid, 5000)`,
		chaosAppHerald, chaosAppHost)
	if err != nil {
		return out, fmt.Errorf("terminate backends: %w", err)
	}
	for rows.Next() {
		var pid int
		var app string
		var inTx bool
		if err := rows.Scan(&pid, &app, &inTx); err != nil {
			return out, err
		}
		switch {
		case app == chaosAppHerald:
			out.herald++
			if inTx {
				out.heraldInTx++
			}
		case pid == victim:
			out.victimCut = true
			out.host++
		default:
			out.host++
		}
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("terminate backends: %w", err)
	}
	out.committed = tx.Commit(ctx) == nil
	err = e.admin.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM chaos_comments WHERE id = $1) +
			(SELECT count(*) FROM herald_notifications WHERE data->>'comment_id' = $1) +
			(SELECT count(*) FROM watermill_herald_outbox WHERE payload::text LIKE '%"' || $1 || '"%')`,
		id).Scan(&out.partial)
	return out, err
}

// holdRelayInExpansion makes the relay wait inside its subscriber
// transaction: an admin transaction locks the device tokens, which the
// relay's expansion reads, and holds the lock until release is called. It
// returns once the relay is seen waiting for the lock. At the chaos
// cluster's wal_level (minimal) the lock does not assign a transaction id,
// so it hides no event from the relay; at replica it would.
func (e *chaosEnv) holdRelayInExpansion(ctx context.Context) (release func(), err error) {
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		return nil, err
	}
	release = func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }
	if _, err := tx.Exec(ctx, `LOCK TABLE herald_device_tokens IN ACCESS EXCLUSIVE MODE`); err != nil {
		release()
		return nil, fmt.Errorf("lock device tokens: %w", err)
	}
	// Generous: under a loaded CI machine the relay's retry cycle (ack
	// deadline 3 s, resend every 1 s) can take a few rounds to show.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting bool
		// The relay's expansion runs inside its subscriber transaction; the
		// broadcast expander's statement, which waits for the lock too, is
		// a transaction of its own.
		err := e.admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock' AND xact_start < query_start
			  AND query LIKE '%INSERT INTO herald_deliveries%')`,
			chaosAppHerald).Scan(&waiting)
		if err != nil {
			release()
			return nil, err
		}
		if waiting {
			return release, nil
		}
		if time.Now().After(deadline) {
			release()
			return nil, errors.New("the relay did not reach its expansion within 30s")
		}
		if !cli.Sleep(ctx, 10*time.Millisecond) {
			release()
			return nil, ctx.Err()
		}
	}
}
