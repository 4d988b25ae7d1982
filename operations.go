package herald

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
)

// Operator actions: what an operator or an admin page needs to see and
// mend, and nothing that takes part in sending (claiming, recording). Each
// may be called whether or not Run is running, from any process on the
// same database, including one whose Herald was made without an FCM client
// (see New), and is safe for concurrent use. None acts on everything when
// given no ids: that is what the ...All methods are for. The herald
// command's `deliveries` and `deadletters` commands are these methods.

// ListDeliveries returns the deliveries of one notification (one per
// device token), in id order.
func (h *Herald) ListDeliveries(ctx context.Context, notificationID uuid.UUID) ([]*notification.Delivery, error) {
	return h.deliveries.ListForNotification(ctx, notificationID)
}

// ListDeliveriesByStatus returns at most limit deliveries in status, the
// most recently changed first. limit must be positive, and status one of
// the notification.Status... constants: an unknown status is an error, not
// an empty list, so that a typo never reads as "nothing failed".
func (h *Herald) ListDeliveriesByStatus(ctx context.Context, status notification.DeliveryStatus, limit int) ([]*notification.Delivery, error) {
	if !knownStatus(status) {
		return nil, fmt.Errorf("list deliveries: unknown status %q", status)
	}
	if limit < 1 {
		return nil, fmt.Errorf("list deliveries: limit %d must be positive", limit)
	}
	return h.deliveries.ListByStatus(ctx, status, limit)
}

// knownStatus reports whether s is one of the delivery statuses.
func knownStatus(s notification.DeliveryStatus) bool {
	return s.IsKnown()
}

// CountDeliveries returns how many deliveries are in each status.
func (h *Herald) CountDeliveries(ctx context.Context) (map[notification.DeliveryStatus]int, error) {
	return h.deliveries.CountByStatus(ctx)
}

// ListFailed returns at most limit failed deliveries, the most recently
// failed first: ListDeliveriesByStatus for notification.StatusFailed.
// limit must be positive.
func (h *Herald) ListFailed(ctx context.Context, limit int) ([]*notification.Delivery, error) {
	return h.ListDeliveriesByStatus(ctx, notification.StatusFailed, limit)
}

// RetryFailed makes the failed deliveries with the given ids pending
// again, due now by the database's clock with a fresh attempt count, and
// returns how many it changed. It is idempotent: a delivery that is no
// longer failed (sent, pending, or retried already) is left alone, and so
// are deliveries whose token was pruned or moved. A retried delivery is
// still pushed only if its token belongs to its notification's recipient
// when it is claimed. No ids retries nothing.
func (h *Herald) RetryFailed(ctx context.Context, ids []int64) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	return h.deliveries.RetryFailed(ctx, ids, adapters.RetryBatch)
}

// RetryAllFailed makes every delivery that has failed by now pending again,
// in batches of 1,000, each its own short statement, until none is left or
// ctx ends, and returns how many it changed, also when it returns an error.
// It logs the running total at INFO after each batch. A delivery that
// fails again meanwhile is not retried again, so it always ends; an
// interrupted run may be started again.
func (h *Herald) RetryAllFailed(ctx context.Context) (int, error) {
	return h.deliveries.RetryAll(ctx, func(total int) {
		h.log.Info("failed deliveries made pending so far", "component", "herald_operator", "total", total)
	})
}

// DeadLetters returns at most limit dead letters, the newest first; only
// those not yet replayed if pendingOnly. limit must be positive. Each
// carries the first 64 KiB of its payload (DeadLetter.Payload) and the
// whole payload's size (PayloadBytes): a dead letter may keep a malformed
// outbox message of up to 16 MiB. ReplayDeadLetters replays it whole.
func (h *Herald) DeadLetters(ctx context.Context, pendingOnly bool, limit int) ([]DeadLetter, error) {
	if limit < 1 {
		return nil, fmt.Errorf("list dead letters: limit %d must be positive", limit)
	}
	return h.deadLetters.List(ctx, pendingOnly, limit)
}

// ReplayDeadLetters puts the dead letters with the given ids back on the
// outbox, for example after deploying the rule for an event type the
// relay did not know, and returns how many it replayed. Each dead letter is
// replayed at most once however often this runs; a message that fails
// again is dead-lettered again as a new entry. No ids replays nothing.
func (h *Herald) ReplayDeadLetters(ctx context.Context, ids []int64) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	return outbox.ReplayDeadLetters(ctx, h.pool, adapters.DeadLettersIn, ids)
}

// ReplayAllDeadLetters replays every dead letter not yet replayed, as
// ReplayDeadLetters does, and returns how many.
func (h *Herald) ReplayAllDeadLetters(ctx context.Context) (int, error) {
	return outbox.ReplayDeadLetters(ctx, h.pool, adapters.DeadLettersIn, nil)
}

// QueryDeliveries returns a page of the deliveries q selects (by status,
// FCM error code, recipient, notification, last change since), the newest
// first, and in page.Next the cursor of the next page ("" on the last):
// pass it back as q.Cursor with the same filters. q.Limit defaults to
// DefaultDeliveryPageSize and is at most MaxDeliveryPageSize. Tokens are
// shown only as their TokenHash. An unknown status is an error, so that a
// typo never reads as "nothing failed"; a cursor it did not make is
// ErrInvalidCursor.
//
// Filtering by notification or recipient reads through indexes, as does
// filtering by an open status or by failed. Filtering by code or by a
// finished status alone reads the newest deliveries until the page is
// full: fast when matches are common, slow on millions of rows with few
// matches (add a recipient, a notification or Since then).
func (h *Herald) QueryDeliveries(ctx context.Context, q DeliveryQuery) (DeliveryPage, error) {
	return h.deliveries.QueryDeliveries(ctx, q)
}

// Timeline returns what happened to one notification: the notification,
// how many of its deliveries stand in each status, each delivery (at most
// MaxTimelineDeliveries, the oldest first; Truncated says when there are
// more) with its token's hash and every attempt with its outcome, FCM
// error code and time, and for a broadcast how far its expansion has come.
// A notification that does not exist is notification.ErrNotFound (also
// once housekeeping has deleted it). The counts read every delivery of the
// notification: for a broadcast to 333,333 devices the whole call took
// under a second on a loaded machine (BENCHMARKS.md).
func (h *Herald) Timeline(ctx context.Context, notificationID uuid.UUID) (Timeline, error) {
	return h.deliveries.Timeline(ctx, notificationID)
}

// RetryFailedWhere makes the failed deliveries q selects pending again, as
// RetryFailed does, and returns how many it changed, also when it returns
// an error. It works in batches of 1,000, each its own short statement,
// logging the running total at INFO, until none is left, ctx ends or
// q.Limit (if positive) are retried; q.Cursor is ignored. Only deliveries
// that failed before it started are retried, so it ends even while
// retries fail again, and it is idempotent: running it again retries only
// what is still failed. q.Status must be "" or notification.StatusFailed,
// and q must have at least one other filter (Code, Recipient,
// NotificationID, Since): RetryAllFailed is how to retry everything.
func (h *Herald) RetryFailedWhere(ctx context.Context, q DeliveryQuery) (int, error) {
	if q.Code == "" && q.Recipient == "" && q.NotificationID == uuid.Nil && q.Since.IsZero() {
		return 0, errors.New("retry failed deliveries: the query selects every failed delivery: give a filter, or use RetryAllFailed")
	}
	return h.deliveries.RetryFailedWhere(ctx, q, func(total int) {
		h.log.Info("failed deliveries made pending so far", "component", "herald_operator", "total", total)
	})
}

// CancelNotification cancels the pushes of a notification not made yet,
// and returns how many deliveries it cancelled. Its pending and
// retry-scheduled deliveries end cancelled (notification.StatusCancelled,
// code "CANCELLED"), in batches; the notification is marked cancelled so
// that the relay creates no more deliveries for it, a broadcast of it stops
// expanding, and any delivery of it that comes due later (one in flight at
// the cancel that fails and would be retried) ends cancelled instead of
// pushed. Pushes in flight at the moment finish: they were on their way to
// FCM. It is idempotent (a second call cancels nothing more and returns
// 0); the notification stays in the recipient's inbox. A notification that
// does not exist is notification.ErrNotFound.
func (h *Herald) CancelNotification(ctx context.Context, notificationID uuid.UUID) (int, error) {
	return h.deliveries.CancelNotification(ctx, notificationID)
}

// TokenHash is how Herald shows a device token in its logs and operator
// output: "tok_" and the first 12 hex digits of its SHA-256, enough to
// correlate, not enough to send to. An admin page listing deliveries shows
// this rather than the token.
func TokenHash(token string) string { return adapters.TokenHash(token) }
