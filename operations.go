package herald

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
)

// Operator actions: what an operator or an admin page needs to see and
// mend, and nothing that takes part in sending (claiming, recording). Each
// may be called whether or not Run is running, from any process on the
// same database, and is safe for concurrent use. None acts on everything
// when given no ids: that is what the ...All methods are for.

// ListDeliveries returns the deliveries of one notification (one per
// device token), in id order.
func (h *Herald) ListDeliveries(ctx context.Context, notificationID uuid.UUID) ([]*notification.Delivery, error) {
	return h.deliveries.ListForNotification(ctx, notificationID)
}

// CountDeliveries returns how many deliveries are in each status.
func (h *Herald) CountDeliveries(ctx context.Context) (map[notification.DeliveryStatus]int, error) {
	return h.deliveries.CountByStatus(ctx)
}

// ListFailed returns at most limit failed deliveries, the most recently
// failed first. limit must be positive.
func (h *Herald) ListFailed(ctx context.Context, limit int) ([]*notification.Delivery, error) {
	if limit < 1 {
		return nil, fmt.Errorf("list failed deliveries: limit %d must be positive", limit)
	}
	return h.deliveries.ListByStatus(ctx, notification.StatusFailed, limit)
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
// in batches of short statements, until none is left or ctx ends, and
// returns how many it changed. A delivery that fails again meanwhile is not
// retried again, so it always ends; an interrupted run may be started
// again.
func (h *Herald) RetryAllFailed(ctx context.Context) (int, error) {
	return h.deliveries.RetryAll(ctx, nil)
}

// DeadLetters returns at most limit dead letters, the newest first; only
// those not yet replayed if pendingOnly. limit must be positive.
func (h *Herald) DeadLetters(ctx context.Context, pendingOnly bool, limit int) ([]DeadLetter, error) {
	if limit < 1 {
		return nil, fmt.Errorf("list dead letters: limit %d must be positive", limit)
	}
	return adapters.NewPostgresDeadLetterRepository(h.pool).List(ctx, pendingOnly, limit)
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
