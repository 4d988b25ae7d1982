package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The watermill-sql tables of the outbox topic and of its consumer groups'
// positions (created by the migrations).
const (
	messagesTable = `"watermill_` + topic + `"`
	offsetsTable  = `"watermill_offsets_` + topic + `"`
)

// freshOffset gives a requeued row a new offset from the table's sequence:
// rows given one transaction id must not share an offset (the primary
// key), and rows written by hand may.
const freshOffset = `"offset" = nextval(pg_get_serial_sequence('` + messagesTable + `', 'offset'))`

// watchOffsets checks the stored position every RestoreCheckInterval until
// ctx ends: a logical-replication cut-over can happen under a running
// process. Errors are left to the relay, which reports database trouble.
func (r *Relay) watchOffsets(ctx context.Context) {
	ticker := time.NewTicker(r.cfg.RestoreCheckInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if err := r.checkRestoredOffsets(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("check the outbox position against the database's transaction ids", "err", err)
		}
	}
}

// checkRestoredOffsets repairs the consumer group's stored position when it
// is ahead of the database's transaction ids.
//
// watermill-sql stores the position as (transaction id, offset) and reads
// rows after it whose transaction id is below the oldest running one. The
// ids are the cluster's (xid8), and a logical dump and restore (pg_dump,
// pg_restore) or a logical-replication cut-over copies the rows and the
// position with the old cluster's ids into a cluster whose counter is
// elsewhere, usually far behind. Every new event then sits below the stored
// position: the relay would skip it as consumed, without an error, and
// housekeeping would delete it an hour later. (pg_upgrade and physical
// replicas keep the ids: nothing is wrong there.)
//
// The check is one query that takes no lock and assigns no transaction id:
// is the stored id at or past pg_snapshot_xmax(pg_current_snapshot()), the
// first id not yet assigned? Ids there cannot come from this cluster. If it
// is, the repair runs in one transaction holding the position's row lock
// (so no relay reads meanwhile, and a second relay doing the same finds
// the position already reset):
//
//   - restored rows (ids at or past xmax, seen in the statement's own
//     snapshot, so a new event committing meanwhile is never one of them)
//     at or before the stored position were consumed: deleted;
//   - restored rows after it were not: their id is rewritten to 1, below
//     every id this cluster assigns, so they are visible and read first;
//   - the position goes back to the start, so the relay reads everything
//     left: the restored unconsumed events and every event raised since.
//
// Restored rows whose old ids happen to lie below this cluster's counter
// cannot be told from new ones; they are read again. That repeats no push:
// expansion is idempotent (one delivery per notification and token), so a
// re-read event whose deliveries still exist creates none.
//
// Restored rows can be ahead while the position is not: the old cluster's
// relay had never run (there is no position) or had fallen behind the
// events raised before the dump. Those rows would stay invisible until
// this cluster's counter passed their ids, which may be never; the check
// looks for them too (one probe of the outbox's primary key), and the
// repair then queues them again under its own transaction's id, which is
// after the stored position, so nothing already consumed is read again.
func (r *Relay) checkRestoredOffsets(ctx context.Context) error {
	var ahead bool
	err := r.pool.QueryRow(ctx, `SELECT coalesce((SELECT last_processed_transaction_id >= pg_snapshot_xmax(pg_current_snapshot())
			FROM `+offsetsTable+` WHERE consumer_group = $1), false)
		OR coalesce((SELECT transaction_id FROM `+messagesTable+` ORDER BY transaction_id DESC LIMIT 1)
			>= pg_snapshot_xmax(pg_current_snapshot()), false)`,
		ConsumerGroup).Scan(&ahead)
	if err != nil {
		return fmt.Errorf("read outbox position: %w", err)
	}
	if !ahead {
		return nil // no position yet (the subscriber writes it), or a sane one, and no row from elsewhere
	}
	return r.repairRestoredOffsets(ctx)
}

// repairRestoredOffsets is checkRestoredOffsets' repair, in one transaction.
func (r *Relay) repairRestoredOffsets(ctx context.Context) error {
	var (
		repaired           bool
		storedXID, xmax    string
		storedOffset       int64
		consumed, requeued int64
		rowsOnly           bool
	)
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var ahead bool
		err := tx.QueryRow(ctx, `SELECT last_processed_transaction_id::text, coalesce(offset_acked, 0),
				pg_snapshot_xmax(pg_current_snapshot())::text,
				last_processed_transaction_id >= pg_snapshot_xmax(pg_current_snapshot())
			FROM `+offsetsTable+` WHERE consumer_group = $1 FOR UPDATE`, ConsumerGroup).
			Scan(&storedXID, &storedOffset, &xmax, &ahead)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if !ahead {
			// The position is sane (or there is none, or another relay
			// repaired it while we waited for the lock): only rows ahead
			// of the counter, if any, are queued again, after it.
			tag, err := tx.Exec(ctx, `UPDATE `+messagesTable+` SET transaction_id = pg_current_xact_id(), `+freshOffset+`
				WHERE transaction_id >= pg_snapshot_xmax(pg_current_snapshot())`)
			if err != nil {
				return fmt.Errorf("requeue outbox rows ahead of the transaction ids: %w", err)
			}
			requeued = tag.RowsAffected()
			rowsOnly = requeued > 0
			return nil
		}
		tag, err := tx.Exec(ctx, `DELETE FROM `+messagesTable+`
			WHERE transaction_id >= pg_snapshot_xmax(pg_current_snapshot())
			  AND (transaction_id, "offset") <= ($1::xid8, $2::bigint)`, storedXID, storedOffset)
		if err != nil {
			return fmt.Errorf("delete consumed restored outbox rows: %w", err)
		}
		consumed = tag.RowsAffected()
		tag, err = tx.Exec(ctx, `UPDATE `+messagesTable+` SET transaction_id = '1', `+freshOffset+`
			WHERE transaction_id >= pg_snapshot_xmax(pg_current_snapshot())`)
		if err != nil {
			return fmt.Errorf("requeue unconsumed restored outbox rows: %w", err)
		}
		requeued = tag.RowsAffected()
		if _, err := tx.Exec(ctx, `UPDATE `+offsetsTable+`
			SET last_processed_transaction_id = '0', offset_acked = 0 WHERE consumer_group = $1`, ConsumerGroup); err != nil {
			return fmt.Errorf("reset outbox position: %w", err)
		}
		repaired = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("repair restored outbox position: %w", err)
	}
	if rowsOnly {
		r.stats.offsetsRepaired.Add(1)
		r.log.Error("outbox rows carried transaction ids ahead of this database's, as after a logical dump and "+
			"restore or a logical-replication cut-over of events the relay had not read; they would have waited "+
			"until this database's ids caught up. Queued them again", "unconsumed_requeued", requeued)
	}
	if repaired {
		r.stats.offsetsRepaired.Add(1)
		r.log.Error("the outbox position was ahead of this database's transaction ids, as after a logical "+
			"dump and restore or a logical-replication cut-over; new events would have been skipped. "+
			"Reset it: consumed restored events deleted, unconsumed ones queued again",
			"stored_transaction_id", storedXID, "stored_offset", storedOffset, "database_next_transaction_id", xmax,
			"consumed_deleted", consumed, "unconsumed_requeued", requeued)
	}
	return nil
}
