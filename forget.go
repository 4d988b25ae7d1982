package herald

import (
	"context"
	"fmt"

	"github.com/herald-push/herald/notification"
)

// ForgetUser erases everything Herald holds about userID, as an erasure
// request requires, in one transaction: their notifications (the inbox)
// and every delivery of them, every other delivery to their devices, their
// device tokens, preferences and per-device counts, and the outbox rows
// and dead letters that name them (the relay's consumed rows are deleted;
// a row not yet relayed, and a dead letter, keeps only other users'
// notification ids and loses the data of every event that names the
// user; a dead letter with nothing of others left goes). Afterwards
// no row of Herald's tables names the user or one of their tokens, and
// nothing more is pushed to their devices; a push a sender had already
// claimed may still arrive until ErasureReport.InFlightUntil, and its
// outcome is never recorded back. Other users' pushes go on undisturbed.
// It is idempotent. Stop registering tokens for the user before calling
// it.
func (h *Herald) ForgetUser(ctx context.Context, userID string) (ErasureReport, error) {
	if err := notification.ValidateUserID(userID); err != nil {
		return ErasureReport{}, fmt.Errorf("forget user: %w", err)
	}
	return h.deliveries.ForgetUser(ctx, userID)
}
