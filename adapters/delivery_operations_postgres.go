package adapters

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// The operator's queries and actions on deliveries (app.DeliveryQuery,
// app.Timeline). They read and change only what an operator may: nothing
// here claims or records a push.

// deliveryFilter is the WHERE clause of a DeliveryQuery over
// herald_deliveries d joined to herald_notifications n, with its arguments.
type deliveryFilter struct {
	conds []string
	args  []any
}

func (f *deliveryFilter) add(cond string, arg any) {
	f.args = append(f.args, arg)
	f.conds = append(f.conds, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(f.args))))
}

func (f *deliveryFilter) where() string {
	if len(f.conds) == 0 {
		return ""
	}
	return "WHERE " + strings.Join(f.conds, " AND ")
}

// filterOf builds the filter of q's selection (not its cursor or limit).
// The status is written as a literal (it was checked to be a known one) so
// that the planner can match the partial indexes on open and failed
// deliveries.
func filterOf(q app.DeliveryQuery) (*deliveryFilter, error) {
	f := &deliveryFilter{}
	if q.Status != "" {
		if !q.Status.IsKnown() {
			return nil, fmt.Errorf("unknown status %q", q.Status)
		}
		f.conds = append(f.conds, "d.status = '"+string(q.Status)+"'")
	}
	if q.Code != "" {
		f.add("d.error_code = $?", q.Code)
	}
	if q.Recipient != "" {
		f.add("n.recipient = $?", q.Recipient)
	}
	if q.NotificationID != uuid.Nil {
		f.add("d.notification_id = $?", [16]byte(q.NotificationID))
	}
	if !q.Since.IsZero() {
		f.add("d.updated_at >= $?", q.Since)
	}
	return f, nil
}

// deliveryCursor encodes the id a page ended at.
func deliveryCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("d:" + strconv.FormatInt(id, 10)))
}

func parseDeliveryCursor(s string) (int64, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || !strings.HasPrefix(string(raw), "d:") {
		return 0, app.ErrInvalidCursor
	}
	id, err := strconv.ParseInt(string(raw[2:]), 10, 64)
	if err != nil || id <= 0 {
		return 0, app.ErrInvalidCursor
	}
	return id, nil
}

const deliveryInfoColumns = `d.id, d.notification_id, n.recipient, n.type, d.token, d.status, d.attempts,
	d.error_code, d.last_error, d.due_at, d.created_at, d.updated_at`

func scanDeliveryInfo(row pgx.CollectableRow) (app.DeliveryInfo, error) {
	var d app.DeliveryInfo
	var token, status string
	err := row.Scan(&d.ID, &d.NotificationID, &d.Recipient, &d.Type, &token, &status, &d.Attempts,
		&d.Code, &d.LastError, &d.DueAt, &d.CreatedAt, &d.UpdatedAt)
	d.TokenHash, d.Status = TokenHash(token), notification.DeliveryStatus(status)
	return d, err
}

// QueryDeliveries returns a page of the deliveries q selects, the newest
// (highest id) first. A filter by notification or recipient reads through
// their indexes; a filter by an open status or failed, through the partial
// indexes on those; a filter by code alone reads the newest rows until the
// page is full, which on a large table with few matches takes a while.
func (r *PostgresDeliveryRepository) QueryDeliveries(ctx context.Context, q app.DeliveryQuery) (app.DeliveryPage, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = app.DefaultDeliveryPageSize
	}
	limit = min(limit, app.MaxDeliveryPageSize)
	f, err := filterOf(q)
	if err != nil {
		return app.DeliveryPage{}, fmt.Errorf("query deliveries: %w", err)
	}
	if q.Cursor != "" {
		after, err := parseDeliveryCursor(q.Cursor)
		if err != nil {
			return app.DeliveryPage{}, fmt.Errorf("query deliveries: %w", err)
		}
		f.add("d.id < $?", after)
	}
	f.args = append(f.args, limit+1)
	rows, err := r.db.Query(ctx, `SELECT `+deliveryInfoColumns+`
		FROM herald_deliveries d JOIN herald_notifications n ON n.id = d.notification_id
		`+f.where()+` ORDER BY d.id DESC LIMIT $`+strconv.Itoa(len(f.args)), f.args...)
	if err != nil {
		return app.DeliveryPage{}, fmt.Errorf("query deliveries: %w", err)
	}
	ds, err := pgx.CollectRows(rows, scanDeliveryInfo)
	if err != nil {
		return app.DeliveryPage{}, fmt.Errorf("query deliveries: %w", err)
	}
	page := app.DeliveryPage{Deliveries: ds}
	if len(ds) > limit {
		page.Deliveries = ds[:limit]
		page.Next = deliveryCursor(ds[limit-1].ID)
	}
	return page, nil
}

// RetryFailedWhere makes the failed deliveries q selects pending again,
// due now with a fresh attempt count, RetryBatch at a time (each batch its
// own statement), until none is left, ctx ends or q.Limit (if positive)
// are retried, and returns how many it changed. q.Status must be "" or
// failed; q.Cursor is ignored. Only deliveries that failed by the time it
// started are retried, so it ends even while retries fail again. It is
// idempotent: a delivery no longer failed is left alone.
func (r *PostgresDeliveryRepository) RetryFailedWhere(ctx context.Context, q app.DeliveryQuery, progress func(total int)) (int, error) {
	if q.Status != "" && q.Status != notification.StatusFailed {
		return 0, fmt.Errorf("retry failed deliveries: only failed deliveries can be retried, not %s", q.Status)
	}
	q.Status = notification.StatusFailed
	f, err := filterOf(q)
	if err != nil {
		return 0, fmt.Errorf("retry failed deliveries: %w", err)
	}
	var failedBy time.Time
	if err := r.db.QueryRow(ctx, `SELECT now()`).Scan(&failedBy); err != nil {
		return 0, fmt.Errorf("retry failed deliveries: %w", err)
	}
	f.add("d.updated_at <= $?", failedBy)
	// Each batch starts after the last delivery the one before it took
	// (the order is the partial index on failed deliveries' updated_at):
	// the failed deliveries the filter does not select are read once in
	// all, not once a batch.
	f.args = append(f.args, time.Time{}, int64(0), 0)
	n := len(f.args)
	afterAt, afterID, limitArg := "$"+strconv.Itoa(n-2), "$"+strconv.Itoa(n-1), "$"+strconv.Itoa(n)
	f.conds = append(f.conds, "(d.updated_at, d.id) > ("+afterAt+"::timestamptz, "+afterID+"::bigint)")
	sql := `WITH picked AS (
			SELECT d.id, d.updated_at FROM herald_deliveries d JOIN herald_notifications n ON n.id = d.notification_id
			` + f.where() + ` ORDER BY d.updated_at, d.id LIMIT ` + limitArg + ` FOR UPDATE OF d SKIP LOCKED
		), retried AS (
			UPDATE herald_deliveries SET status = 'pending', attempts = 0, due_at = now(), claim_id = NULL, updated_at = now()
			WHERE status = 'failed' AND id IN (SELECT id FROM picked)
			RETURNING id
		)
		SELECT (SELECT count(*) FROM retried), (SELECT count(*) FROM picked), last.updated_at, last.id
		FROM (SELECT 1) one LEFT JOIN LATERAL (
			SELECT updated_at, id FROM picked ORDER BY updated_at DESC, id DESC LIMIT 1) last ON true`
	f.args[n-3] = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	total := 0
	for {
		batch := RetryBatch
		if q.Limit > 0 {
			batch = min(batch, q.Limit-total)
		}
		if batch <= 0 {
			return total, nil
		}
		f.args[n-1] = batch
		var retried, picked int
		var lastAt *time.Time
		var lastID *int64
		if err := r.db.QueryRow(ctx, sql, f.args...).Scan(&retried, &picked, &lastAt, &lastID); err != nil {
			return total, fmt.Errorf("retry failed deliveries: %w", err)
		}
		total += retried
		if retried > 0 {
			if err := r.signal(ctx); err != nil {
				return total, err
			}
			if progress != nil {
				progress(total)
			}
		}
		if picked < batch || lastAt == nil {
			return total, nil
		}
		f.args[n-3], f.args[n-2] = *lastAt, *lastID
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

// cancelBatch is how many deliveries one statement of CancelNotification
// cancels.
const cancelBatch = 5000

// CancelNotification cancels a notification's pushes not yet made and
// returns how many deliveries it cancelled. It marks the notification
// cancelled (the relay expands no more deliveries for it, a broadcast of it
// stops expanding, and any of its deliveries claimed later ends cancelled
// rather than pushed), then closes its pending and retry-scheduled
// deliveries as cancelled, cancelBatch per statement. Deliveries claimed
// at that moment (pushes in flight) finish; if one fails and would be
// retried, the retry is cancelled when it comes due. It is idempotent; a
// notification that does not exist is notification.ErrNotFound.
func (r *PostgresDeliveryRepository) CancelNotification(ctx context.Context, id uuid.UUID) (int, error) {
	var found bool
	err := r.db.QueryRow(ctx, `
		WITH n AS (
			UPDATE herald_notifications SET cancelled_at = coalesce(cancelled_at, now()) WHERE id = $1 RETURNING id
		), b AS (
			UPDATE herald_broadcasts SET finished_at = now(), `+clearHoldSQL+`
			WHERE notification_id = $1 AND finished_at IS NULL
		)
		SELECT EXISTS (SELECT 1 FROM n)`, [16]byte(id)).Scan(&found)
	if err != nil {
		return 0, fmt.Errorf("cancel notification: %w", err)
	}
	if !found {
		return 0, fmt.Errorf("cancel notification %s: %w", id, notification.ErrNotFound)
	}
	total := 0
	for {
		tag, err := r.db.Exec(ctx, `
			UPDATE herald_deliveries SET status = 'cancelled', due_at = now(), claim_id = NULL, updated_at = now(),
				error_code = 'CANCELLED', last_error = 'cancelled by an operator'
			WHERE id IN (
				SELECT id FROM herald_deliveries
				WHERE notification_id = $1 AND status IN ('pending', 'retry_scheduled')
				LIMIT $2 FOR UPDATE)
			AND status IN ('pending', 'retry_scheduled')`, [16]byte(id), cancelBatch)
		if err != nil {
			return total, fmt.Errorf("cancel notification: %w", err)
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < cancelBatch {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

// Timeline reads one notification, how many of its deliveries stand in
// each status, its first app.MaxTimelineDeliveries deliveries with their
// attempts, and its broadcast's progress. A notification that does not
// exist is notification.ErrNotFound.
//
// Failed attempts come from herald_delivery_attempts; the successful one
// from the delivery row, which also stands in for a last failed attempt
// the log lacks (one recorded before the log existed).
func (r *PostgresDeliveryRepository) Timeline(ctx context.Context, id uuid.UUID) (app.Timeline, error) {
	var t app.Timeline
	n := &t.Notification
	var cancelled, sendAt, expiresAt, superseded *time.Time
	err := r.db.QueryRow(ctx, `SELECT id, recipient, type, title, body, audience IS NOT NULL, created_at, cancelled_at,
			send_at, expires_at, coalesce(collapse_key, ''), superseded_at, coalesce(idempotency_key, '')
		FROM herald_notifications WHERE id = $1`, [16]byte(id)).
		Scan(&n.ID, &n.Recipient, &n.Type, &n.Title, &n.Body, &n.Broadcast, &n.CreatedAt, &cancelled,
			&sendAt, &expiresAt, &n.CollapseKey, &superseded, &n.IdempotencyKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return app.Timeline{}, fmt.Errorf("timeline of %s: %w", id, notification.ErrNotFound)
	}
	if err != nil {
		return app.Timeline{}, fmt.Errorf("timeline: %w", err)
	}
	n.CancelledAt, n.SendAt, n.ExpiresAt, n.SupersededAt = deref(cancelled), deref(sendAt), deref(expiresAt), deref(superseded)
	rows, err := r.db.Query(ctx, `SELECT status, count(*) FROM herald_deliveries WHERE notification_id = $1 GROUP BY status`, [16]byte(id))
	if err != nil {
		return app.Timeline{}, fmt.Errorf("timeline: %w", err)
	}
	t.Counts = map[notification.DeliveryStatus]int{}
	var status string
	var count int
	if _, err := pgx.ForEachRow(rows, []any{&status, &count}, func() error {
		t.Counts[notification.DeliveryStatus(status)] = count
		return nil
	}); err != nil {
		return app.Timeline{}, fmt.Errorf("timeline: %w", err)
	}
	rows, err = r.db.Query(ctx, `SELECT `+deliveryInfoColumns+`
		FROM herald_deliveries d JOIN herald_notifications n ON n.id = d.notification_id
		WHERE d.notification_id = $1 ORDER BY d.id LIMIT $2`, [16]byte(id), app.MaxTimelineDeliveries+1)
	if err != nil {
		return app.Timeline{}, fmt.Errorf("timeline: %w", err)
	}
	infos, err := pgx.CollectRows(rows, scanDeliveryInfo)
	if err != nil {
		return app.Timeline{}, fmt.Errorf("timeline: %w", err)
	}
	if len(infos) > app.MaxTimelineDeliveries {
		infos, t.Truncated = infos[:app.MaxTimelineDeliveries], true
	}
	ids := make([]int64, len(infos))
	byID := make(map[int64]int, len(infos))
	t.Deliveries = make([]app.DeliveryTimeline, len(infos))
	for i, d := range infos {
		ids[i], byID[d.ID] = d.ID, i
		t.Deliveries[i].DeliveryInfo = d
	}
	rows, err = r.db.Query(ctx, `SELECT delivery_id, attempt, outcome, error_code, last_error, attempted_at
		FROM herald_delivery_attempts WHERE delivery_id = ANY ($1::bigint[]) ORDER BY delivery_id, id`, ids)
	if err != nil {
		return app.Timeline{}, fmt.Errorf("timeline: %w", err)
	}
	var deliveryID int64
	var a app.Attempt
	var outcome string
	if _, err := pgx.ForEachRow(rows, []any{&deliveryID, &a.Number, &outcome, &a.Code, &a.Error, &a.At}, func() error {
		a.Outcome = notification.DeliveryStatus(outcome)
		d := &t.Deliveries[byID[deliveryID]]
		d.Attempts = append(d.Attempts, a)
		return nil
	}); err != nil {
		return app.Timeline{}, fmt.Errorf("timeline: %w", err)
	}
	for i := range t.Deliveries {
		d := &t.Deliveries[i]
		if last, ok := lastAttemptFromRow(d); ok {
			d.Attempts = append(d.Attempts, last)
		}
	}
	t.Broadcast, err = r.broadcast(ctx, id)
	if err != nil {
		return app.Timeline{}, fmt.Errorf("timeline: %w", err)
	}
	return t, nil
}

// lastAttemptFromRow is the delivery's last attempt as its row tells it,
// when the attempts log does not hold it: the successful one (never
// logged), or a failed one recorded before the log existed.
func lastAttemptFromRow(d *app.DeliveryTimeline) (app.Attempt, bool) {
	if d.DeliveryInfo.Attempts == 0 {
		return app.Attempt{}, false
	}
	if d.Status == notification.StatusSent {
		return app.Attempt{Number: d.DeliveryInfo.Attempts, Outcome: d.Status, At: d.UpdatedAt}, true
	}
	if n := len(d.Attempts); n > 0 && d.Attempts[n-1].Number == d.DeliveryInfo.Attempts {
		return app.Attempt{}, false // logged
	}
	switch d.Status {
	case notification.StatusFailed, notification.StatusRetryScheduled, notification.StatusTokenPruned:
		if d.Code == "" && d.LastError == "" {
			return app.Attempt{}, false
		}
		return app.Attempt{Number: d.DeliveryInfo.Attempts, Outcome: d.Status, Code: d.Code, Error: d.LastError,
			At: d.UpdatedAt}, true
	}
	return app.Attempt{}, false
}

// broadcast reads the expansion of notification id, nil if it has none.
func (r *PostgresDeliveryRepository) broadcast(ctx context.Context, id uuid.UUID) (*app.BroadcastProgress, error) {
	rows, err := r.db.Query(ctx, broadcastsSQL+` WHERE b.notification_id = $1`, [16]byte(id))
	if err != nil {
		return nil, err
	}
	bs, err := pgx.CollectRows(rows, scanBroadcast)
	if err != nil || len(bs) == 0 {
		return nil, err
	}
	return &bs[0], nil
}

// broadcastsSQL reads broadcasts with their notification's type and, for
// a broadcast to every device, the planner's estimate of the registry's
// size. The reasons are cut to 500 characters (Herald stores at most 500 bytes):
// a row written around Herald must not make a status page of any size.
const broadcastsSQL = `SELECT b.notification_id, n.type, coalesce(b.recipient, ''), b.platforms, b.expanded,
		b.refused, left(coalesce(b.refusal, ''), 500),
		CASE WHEN b.recipient IS NULL THEN greatest((SELECT reltuples FROM pg_class
			WHERE oid = 'herald_device_tokens'::regclass), 0)::bigint ELSE 0 END,
		b.created_at, b.finished_at,
		-- Held: not finished, and not a hold written around Herald.
		CASE WHEN b.finished_at IS NULL AND b.held_until <= now() + ` + holdAheadLimitSQL + ` THEN b.held_until END,
		left(coalesce(b.held_reason, ''), 500), greatest(b.holds, 0)
	FROM herald_broadcasts b JOIN herald_notifications n ON n.id = b.notification_id`

func scanBroadcast(row pgx.CollectableRow) (app.BroadcastProgress, error) {
	var b app.BroadcastProgress
	var finished, heldUntil *time.Time
	err := row.Scan(&b.NotificationID, &b.Type, &b.Recipient, &b.Platforms, &b.Expanded, &b.Refused, &b.Refusal, &b.Tokens,
		&b.StartedAt, &finished, &heldUntil, &b.HeldReason, &b.Holds)
	if finished != nil {
		b.FinishedAt = *finished
	}
	if heldUntil != nil {
		b.HeldUntil = *heldUntil
	} else {
		b.Holds, b.HeldReason = 0, ""
	}
	return b, err
}
