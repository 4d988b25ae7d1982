package adapters

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresHousekeepingRepository deletes what Herald no longer needs, in
// bounded batches so no sweep holds a long transaction: consumed outbox
// rows, old finished deliveries and broadcasts, replayed dead letters and
// expired device tokens. It implements app.HousekeepingStore. Ages are
// measured on the database's clock (now() minus the age), the clock that
// wrote the rows' times. It takes no lock: the fleet's leader sweeps (see
// app.HousekeepingConfig.Leader).
type PostgresHousekeepingRepository struct {
	pool *pgxpool.Pool
}

// NewPostgresHousekeepingRepository returns a repository on pool.
func NewPostgresHousekeepingRepository(pool *pgxpool.Pool) *PostgresHousekeepingRepository {
	if pool == nil {
		panic("adapters: nil pool")
	}
	return &PostgresHousekeepingRepository{pool: pool}
}

// DeleteConsumedOutbox deletes up to limit outbox rows that the relay has
// acknowledged and that were written more than olderThan ago.
func (r *PostgresHousekeepingRepository) DeleteConsumedOutbox(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	return r.exec(ctx, "delete consumed outbox rows", `
		DELETE FROM watermill_herald_outbox WHERE ("transaction_id", "offset") IN (
			SELECT m."transaction_id", m."offset"
			FROM watermill_herald_outbox m
			JOIN watermill_offsets_herald_outbox o ON o.consumer_group = 'herald_relay'
			WHERE (m."transaction_id", m."offset") <= (o.last_processed_transaction_id, o.offset_acked)
			  -- A position at or past the cluster's next id comes from a logical
			  -- restore: every row looks consumed until the relay repairs it.
			  AND o.last_processed_transaction_id < pg_snapshot_xmax(pg_current_snapshot())
			  -- created_at is a timestamp without time zone in the session's zone
			  AND m.created_at < ((now() - $1::bigint * interval '1 microsecond') AT TIME ZONE current_setting('TimeZone'))
			LIMIT $2)`, olderThan.Microseconds(), limit)
}

// DeleteFinishedDeliveries deletes up to limit deliveries that were sent,
// had their token pruned or moved, or ended unsent (expired, superseded,
// cancelled, muted) more than olderThan ago, and up to limit
// failed ones more than failedOlderThan ago (kept longer for operators to
// inspect and retry). A negative age deletes none of those.
//
// A delivery locked by someone else (an operator retrying it, an erasure
// deleting it) is skipped, not waited for, and looked at again next sweep:
// the batch is picked in no particular order (no ORDER BY) and deleted
// in whatever order the join returns it, not in id order (the lock order, see the package
// documentation), and waiting deadlocked with an operator's retry of the
// same failed deliveries, failing the sweep or the retry.
func (r *PostgresHousekeepingRepository) DeleteFinishedDeliveries(ctx context.Context, olderThan, failedOlderThan time.Duration, limit int) (int, error) {
	var n, m int
	var err error
	if olderThan >= 0 {
		n, err = r.exec(ctx, "delete finished deliveries", `
			DELETE FROM herald_deliveries WHERE id IN (
				SELECT id FROM herald_deliveries
				WHERE status IN ('sent', 'token_pruned', 'token_moved', 'expired', 'superseded', 'cancelled', 'muted')
					AND updated_at < now() - $1::bigint * interval '1 microsecond'
				LIMIT $2
				FOR UPDATE SKIP LOCKED)`, olderThan.Microseconds(), limit)
		if err != nil {
			return n, err
		}
	}
	if failedOlderThan >= 0 {
		m, err = r.exec(ctx, "delete failed deliveries", `
			DELETE FROM herald_deliveries WHERE id IN (
				SELECT id FROM herald_deliveries
				WHERE status = 'failed' AND updated_at < now() - $1::bigint * interval '1 microsecond'
				LIMIT $2
				FOR UPDATE SKIP LOCKED)`, failedOlderThan.Microseconds(), limit)
	}
	return n + m, err
}

// DeleteFinishedBroadcasts deletes up to limit broadcasts expanded more than olderThan ago.
func (r *PostgresHousekeepingRepository) DeleteFinishedBroadcasts(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	return r.exec(ctx, "delete finished broadcasts", `
		DELETE FROM herald_broadcasts WHERE notification_id IN (
			SELECT notification_id FROM herald_broadcasts
			WHERE finished_at < now() - $1::bigint * interval '1 microsecond' LIMIT $2)`, olderThan.Microseconds(), limit)
}

// DeleteReplayedDeadLetters deletes up to limit dead letters replayed more than olderThan ago.
func (r *PostgresHousekeepingRepository) DeleteReplayedDeadLetters(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	return r.exec(ctx, "delete replayed dead letters", `
		DELETE FROM herald_dead_letters WHERE id IN (
			SELECT id FROM herald_dead_letters
			WHERE replayed_at < now() - $1::bigint * interval '1 microsecond' LIMIT $2)`, olderThan.Microseconds(), limit)
}

// DeleteTokensUnseenFor deletes up to limit device tokens not seen for
// more than olderThan. A token locked by someone else (a registration
// seeing it again, a sender pruning it) is skipped, not waited for: taking
// the batch's locks in scan order deadlocked with an import locking the
// same tokens in its own order. It is looked at again next sweep.
func (r *PostgresHousekeepingRepository) DeleteTokensUnseenFor(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	return r.exec(ctx, "delete stale device tokens", `
		DELETE FROM herald_device_tokens WHERE token IN (
			SELECT token FROM herald_device_tokens
			WHERE last_seen_at < now() - $1::bigint * interval '1 microsecond' LIMIT $2
			FOR UPDATE SKIP LOCKED)`, olderThan.Microseconds(), limit)
}

// DeleteIdleDeviceRates deletes up to limit per-device counts whose hour
// window ended (so did their minute window): a device's next push starts
// new windows anyway.
func (r *PostgresHousekeepingRepository) DeleteIdleDeviceRates(ctx context.Context, limit int) (int, error) {
	return r.exec(ctx, "delete idle device rates", `
		DELETE FROM herald_device_counts WHERE device IN (
			SELECT device FROM herald_device_counts WHERE hour_start < now() - interval '1 hour' LIMIT $1
			FOR UPDATE SKIP LOCKED)`, limit)
}

// DeleteOldNotifications deletes up to limit notifications of the inbox
// (broadcasts are in no inbox and are not touched) created more than
// readOlderThan ago and read, or more than unreadOlderThan ago and unread,
// with their deliveries, unless one of those is still open or their
// expansion is unfinished. Zero or a negative age deletes none of those.
// The BRIN index on created_at keeps the search cheap.
func (r *PostgresHousekeepingRepository) DeleteOldNotifications(ctx context.Context, readOlderThan, unreadOlderThan time.Duration, limit int) (int, error) {
	if readOlderThan <= 0 && unreadOlderThan <= 0 {
		return 0, nil
	}
	oldest := readOlderThan
	if oldest <= 0 || (unreadOlderThan > 0 && unreadOlderThan < oldest) {
		oldest = unreadOlderThan
	}
	return r.exec(ctx, "delete old notifications", `
		DELETE FROM herald_notifications WHERE id IN (
			SELECT n.id FROM herald_notifications n
			WHERE n.created_at < now() - $3::bigint * interval '1 microsecond' AND n.audience IS NULL
				AND CASE WHEN n.read_at IS NULL
					THEN $2::bigint > 0 AND n.created_at < now() - $2::bigint * interval '1 microsecond'
					ELSE $1::bigint > 0 AND n.created_at < now() - $1::bigint * interval '1 microsecond' END
				AND NOT EXISTS (SELECT 1 FROM herald_deliveries d WHERE d.notification_id = n.id
					AND d.status IN ('pending', 'retry_scheduled', 'claimed'))
				AND NOT EXISTS (SELECT 1 FROM herald_broadcasts b WHERE b.notification_id = n.id AND b.finished_at IS NULL)
			LIMIT $4
			FOR UPDATE SKIP LOCKED)`,
		readOlderThan.Microseconds(), unreadOlderThan.Microseconds(), oldest.Microseconds(), limit)
}

func (r *PostgresHousekeepingRepository) exec(ctx context.Context, what, sql string, args ...any) (int, error) {
	tag, err := r.pool.Exec(ctx, sql, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return int(tag.RowsAffected()), nil
}
