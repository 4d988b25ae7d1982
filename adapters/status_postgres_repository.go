package adapters

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// PostgresStatusRepository reads the deployment's state from Herald's
// tables for the status (app.StatusReport): what every process running
// Herald on the database left there, not one process's counters.
//
// Every query is bounded on a large table: counts that read rows stop at
// app.StatusCountCap (and say so), the open and due deliveries are read
// through the partial index on open deliveries, the relay's backlog
// through the outbox's primary key past the relay's position, and on a
// table of more than exactCountBelow deliveries the finished statuses
// (sent, pruned...) are the planner's estimates from the last ANALYZE,
// marked estimated, rather than a count of millions of rows.
type PostgresStatusRepository struct {
	db DB
}

// NewPostgresStatusRepository returns a repository on db.
func NewPostgresStatusRepository(db DB) *PostgresStatusRepository {
	return &PostgresStatusRepository{db: requireDB(db)}
}

// exactCountBelow is the size (the planner's estimate) under which the
// status counts every delivery by status exactly.
var exactCountBelow float64 = 200_000

// maxStatusBroadcasts bounds the open broadcasts a status lists.
const maxStatusBroadcasts = 20

// relayConsumerGroup is the relay's consumer group in watermill's offsets
// table (outbox.ConsumerGroup).
const relayConsumerGroup = "herald_relay"

// relayBacklogSQL counts the outbox messages past the relay's position
// (at most $1) and the age of the oldest. The position is read first, as
// two scalar subqueries, so that the comparison with it is a condition on
// the outbox's primary key: the scan starts at the relay's position rather
// than reading, and discarding, every consumed row housekeeping keeps (an
// hour of raises by default). A relay that has no position yet ('0', an
// xid8 below every transaction's) has the whole outbox before it.
//
// watermill writes created_at, a timestamp without time zone, in the
// session's time zone.
const relayBacklogSQL = `
	SELECT count(*), coalesce(extract(epoch FROM now() - (min(created_at) AT TIME ZONE current_setting('TimeZone'))), 0)
	FROM (
		SELECT m.created_at FROM watermill_herald_outbox m
		WHERE (m.transaction_id, m."offset") > (
			coalesce((SELECT last_processed_transaction_id FROM watermill_offsets_herald_outbox WHERE consumer_group = $2), '0'::xid8),
			(SELECT offset_acked FROM watermill_offsets_herald_outbox WHERE consumer_group = $2))
		ORDER BY m.transaction_id, m."offset" LIMIT $1) backlog`

// Status reads the report in one read-only transaction, so its figures
// are of one moment.
func (r *PostgresStatusRepository) Status(ctx context.Context) (app.StatusReport, error) {
	var s app.StatusReport
	err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&s.At); err != nil {
			return err
		}
		var err error
		if s.Deliveries, err = deliveryCounts(ctx, tx); err != nil {
			return fmt.Errorf("count deliveries: %w", err)
		}
		var oldestDue *time.Time
		if err := tx.QueryRow(ctx, `
			SELECT count(*), min(due_at) FROM (
				SELECT due_at FROM herald_deliveries
				WHERE status IN ('pending', 'retry_scheduled', 'claimed') AND due_at <= now()
				ORDER BY due_at LIMIT $1) due`, app.StatusCountCap+1).Scan(&s.DueNow, &oldestDue); err != nil {
			return fmt.Errorf("count due deliveries: %w", err)
		}
		s.DueNow, s.DueNowAtLeast = capped(s.DueNow)
		if oldestDue != nil {
			s.OldestDueAge = max(0, s.At.Sub(*oldestDue))
		}
		rows, err := tx.Query(ctx, `
			SELECT error_code, count(*) FROM (
				SELECT error_code FROM herald_delivery_attempts WHERE attempted_at > now() - interval '1 hour'
				ORDER BY attempted_at DESC LIMIT $1) recent
			GROUP BY error_code ORDER BY count(*) DESC, error_code`, app.StatusCountCap)
		if err != nil {
			return fmt.Errorf("count failed attempts: %w", err)
		}
		if s.FailedLastHour, err = pgx.CollectRows(rows, pgx.RowToStructByPos[app.CodeCount]); err != nil {
			return fmt.Errorf("count failed attempts: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM herald_dead_letters WHERE replayed_at IS NULL`).
			Scan(&s.DeadLetters); err != nil {
			return fmt.Errorf("count dead letters: %w", err)
		}
		var lagSeconds float64
		if err := tx.QueryRow(ctx, relayBacklogSQL,
			app.StatusCountCap+1, relayConsumerGroup).Scan(&s.Relay.Messages, &lagSeconds); err != nil {
			return fmt.Errorf("read relay backlog: %w", err)
		}
		s.Relay.Messages, s.Relay.AtLeast = capped(s.Relay.Messages)
		s.Relay.OldestAge = max(0, time.Duration(lagSeconds*float64(time.Second)))
		rows, err = tx.Query(ctx, broadcastsSQL+` WHERE b.finished_at IS NULL ORDER BY b.created_at LIMIT $1`, maxStatusBroadcasts)
		if err != nil {
			return fmt.Errorf("read open broadcasts: %w", err)
		}
		if s.Broadcasts, err = pgx.CollectRows(rows, scanBroadcast); err != nil {
			return fmt.Errorf("read open broadcasts: %w", err)
		}
		// The fleet's quota pause (migration 0007): one row.
		var pauseSeconds float64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(extract(epoch FROM paused_until - now())), 0)::float8
			FROM herald_send_budget
			-- As the grants read it: a pause further ahead is none (see Grant).
			WHERE paused_until BETWEEN now() AND now() + $1::bigint * interval '1 microsecond'`,
			maxFleetPause.Microseconds()).Scan(&pauseSeconds); err != nil {
			return fmt.Errorf("read the fleet's quota pause: %w", err)
		}
		s.QuotaPause = max(0, time.Duration(pauseSeconds*float64(time.Second)))
		return nil
	})
	if err != nil {
		return app.StatusReport{}, fmt.Errorf("read status: %w", err)
	}
	return s, nil
}

// capped turns a count made with LIMIT app.StatusCountCap+1 into the count
// and whether there are more.
func capped(n int64) (int64, bool) {
	if n > app.StatusCountCap {
		return app.StatusCountCap, true
	}
	return n, false
}

// deliveryCounts counts deliveries by status, in notification.Statuses
// order, leaving out the statuses no delivery is in. On a small table it
// counts them all; on a large one it counts the open and failed ones (up to
// app.StatusCountCap, through their partial indexes) and estimates the
// rest from the planner's statistics (the most common values of status
// and their frequencies, times the table's estimated size): a status too
// rare to be among them is left out.
func deliveryCounts(ctx context.Context, tx pgx.Tx) ([]app.StatusCount, error) {
	var size float64
	if err := tx.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'herald_deliveries'::regclass`).Scan(&size); err != nil {
		return nil, err
	}
	byStatus := map[notification.DeliveryStatus]app.StatusCount{}
	add := func(status string, n int64, atLeast, estimated bool) {
		s := notification.DeliveryStatus(status)
		byStatus[s] = app.StatusCount{Status: s, Count: n, AtLeast: atLeast, Estimated: estimated}
	}
	var status string
	var n int64
	if size < exactCountBelow { // -1 (never analysed) included
		rows, err := tx.Query(ctx, `SELECT status, count(*) FROM herald_deliveries GROUP BY status`)
		if err != nil {
			return nil, err
		}
		if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error {
			add(status, n, false, false)
			return nil
		}); err != nil {
			return nil, err
		}
		return inStatusOrder(byStatus), nil
	}
	rows, err := tx.Query(ctx, `
		SELECT status, count(*) FROM (
			SELECT status FROM herald_deliveries WHERE status IN ('pending', 'retry_scheduled', 'claimed') LIMIT $1
		) open GROUP BY status
		UNION ALL
		SELECT 'failed', count(*) FROM (SELECT 1 FROM herald_deliveries WHERE status = 'failed' LIMIT $1) failed`,
		app.StatusCountCap+1)
	if err != nil {
		return nil, err
	}
	var open int64
	if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error {
		if status != string(notification.StatusFailed) {
			open += n
		}
		add(status, n, false, false)
		return nil
	}); err != nil {
		return nil, err
	}
	for s, c := range byStatus {
		if s == notification.StatusFailed {
			c.Count, c.AtLeast = capped(c.Count)
		} else {
			c.AtLeast = open > app.StatusCountCap
		}
		byStatus[s] = c
	}
	rows, err = tx.Query(ctx, `
		SELECT v.status, (v.freq * c.reltuples)::bigint
		FROM pg_class c
		JOIN pg_stats s ON s.schemaname = c.relnamespace::regnamespace::text AND s.tablename = c.relname
			AND s.attname = 'status'
		CROSS JOIN LATERAL unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS v(status, freq)
		WHERE c.oid = 'herald_deliveries'::regclass`)
	if err != nil {
		return nil, err
	}
	if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error {
		if _, counted := byStatus[notification.DeliveryStatus(status)]; !counted && n > 0 {
			add(status, n, false, true)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return inStatusOrder(byStatus), nil
}

func inStatusOrder(byStatus map[notification.DeliveryStatus]app.StatusCount) []app.StatusCount {
	out := make([]app.StatusCount, 0, len(byStatus))
	for _, s := range notification.Statuses {
		if c, ok := byStatus[s]; ok && c.Count > 0 {
			out = append(out, c)
		}
	}
	return out
}
