package notification_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/herald-push/herald/notification"
)

func TestOnlyOpenDeliveriesAreAttemptedAgain(t *testing.T) {
	t.Parallel()
	for status, final := range map[notification.DeliveryStatus]bool{
		notification.StatusPending:        false,
		notification.StatusClaimed:        false,
		notification.StatusRetryScheduled: false,
		notification.StatusSent:           true,
		notification.StatusTokenPruned:    true,
		notification.StatusTokenMoved:     true,
		notification.StatusFailed:         true,
	} {
		assert.Equal(t, final, status.IsFinal(), status)
	}
}
