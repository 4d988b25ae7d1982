package outbox

import (
	"context"
	"time"
)

// longTransactionsQuery lists the open transactions that hold an xid, one
// row per backend, with the age of each when pg_stat_activity shows it.
//
// pg_locks is readable by every role: each transaction with an assigned xid
// holds an exclusive lock on it, so its backend pid shows there whoever owns
// it. pg_stat_activity shows xact_start of another role's session only to
// superusers and members of pg_read_all_stats; for the others, age is NULL
// and the monitor measures it from when it first saw the transaction.
//
// Left out: this connection, and Herald's relay transactions on this
// database, recognised by what they hold, a lock on the consumer group's
// offsets table (watermill-sql locks its row for the whole batch), in this
// process or any other. A relay's transaction is the reader itself, not a
// writer holding events back.
const longTransactionsQuery = `
	SELECT l.pid, min(l.transactionid::text::bigint),
	       extract(epoch FROM clock_timestamp() - min(a.xact_start))::float8
	FROM pg_locks l
	LEFT JOIN pg_stat_activity a ON a.pid = l.pid
	WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
	  AND l.pid IS NOT NULL AND l.pid <> pg_backend_pid()
	  AND NOT EXISTS (
	      SELECT 1 FROM pg_locks o
	      WHERE o.pid = l.pid AND o.locktype = 'relation'
	        AND o.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	        AND o.relation = to_regclass('` + offsetsTable + `'))
	GROUP BY l.pid`

// seenTransaction is when the monitor first saw a backend's transaction.
type seenTransaction struct {
	xid   int64
	first time.Time
}

// monitorLongTransactions checks every second for open write transactions
// in the cluster, which hold back every event committed after they started,
// reports the oldest in Stats, and warns about each one older than
// LongTransactionWarning (at most every 10 s per backend).
func (r *Relay) monitorLongTransactions(ctx context.Context) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	seen := map[int32]seenTransaction{}
	lastWarning := map[int32]time.Time{}
	checkedPrivilege := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if !checkedPrivilege {
			var canSee bool
			if err := r.pool.QueryRow(ctx,
				`SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')`).Scan(&canSee); err != nil {
				continue // the relay itself reports database trouble
			}
			checkedPrivilege = true
			if !canSee {
				r.log.Info("the relay's role lacks pg_read_all_stats: the age of another role's long transaction " +
					"is measured from when the relay first saw it, so warnings about it may come later")
			}
		}
		r.checkLongTransactions(ctx, seen, lastWarning)
	}
}

func (r *Relay) checkLongTransactions(ctx context.Context, seen map[int32]seenTransaction, lastWarning map[int32]time.Time) {
	rows, err := r.pool.Query(ctx, longTransactionsQuery)
	if err != nil {
		return // the relay itself reports database trouble
	}
	now := time.Now()
	open := map[int32]bool{}
	var oldestPID int32
	var oldestAge time.Duration
	type long struct {
		pid       int32
		age       time.Duration
		sinceSeen bool
	}
	var longOnes []long
	for rows.Next() {
		var pid int32
		var xid int64
		var ageSeconds *float64
		if err := rows.Scan(&pid, &xid, &ageSeconds); err != nil {
			rows.Close()
			return
		}
		open[pid] = true
		s, ok := seen[pid]
		if !ok || s.xid != xid {
			s = seenTransaction{xid: xid, first: now}
			seen[pid] = s
		}
		age, sinceSeen := now.Sub(s.first), ageSeconds == nil
		if ageSeconds != nil {
			age = time.Duration(*ageSeconds * float64(time.Second))
		}
		if age > oldestAge {
			oldestPID, oldestAge = pid, age
		}
		if age > r.cfg.LongTransactionWarning {
			longOnes = append(longOnes, long{pid: pid, age: age, sinceSeen: sinceSeen})
		}
	}
	if rows.Err() != nil {
		return
	}
	for pid := range seen {
		if !open[pid] {
			delete(seen, pid)
			delete(lastWarning, pid)
		}
	}
	r.stats.oldestTxAge.Store(int64(oldestAge))
	r.stats.oldestTxPID.Store(oldestPID)
	for _, l := range longOnes {
		if now.Sub(lastWarning[l.pid]) < 10*time.Second {
			continue
		}
		lastWarning[l.pid] = now
		args := []any{"blocking_pid", l.pid, "transaction_age", l.age.Round(time.Millisecond)}
		if l.sinceSeen {
			args = append(args, "age_is", "at least (seen by this relay; grant pg_read_all_stats for the exact age)")
		}
		r.log.Warn("a long open transaction is delaying the outbox: events committed after it started wait until it ends", args...)
	}
}
