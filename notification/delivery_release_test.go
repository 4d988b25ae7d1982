package notification_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

func TestFailuresThatAreNotTheDeliverysFaultAreReleasedWithoutAnAttempt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		err     error
		wantDue time.Time
	}{
		{"our credentials rejected: retried after the first delay, even on the last attempt",
			&notification.SendError{Class: notification.ErrCredentialsRejected, Code: "UNAUTHENTICATED", CountsAgainstProvider: true},
			now.Add(policy.Delay(1, 0, 0.5))},
		{"cancelled by Herald: due at once",
			&notification.SendError{Class: notification.ErrPushCancelled, Code: "CANCELLED"}, now},
		{"breaker open: due after the base delay",
			&notification.SendError{Class: notification.ErrCircuitOpen}, now.Add(policy.BaseDelay)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := claimed(policy.MaxAttempts - 1) // one attempt left
			status, err := d.RecordFailure(tt.err, policy, now, 0.5)
			require.NoError(t, err)
			assert.Equal(t, notification.StatusRetryScheduled, status, "never failed for good")
			assert.Equal(t, policy.MaxAttempts-1, d.Attempts(), "no attempt counted")
			assert.Equal(t, tt.wantDue, d.DueAt())
			assert.False(t, notification.CountsAsAttempt(tt.err))
		})
	}
}

func TestCredentialsRejectedIsAConfigurationAlarm(t *testing.T) {
	t.Parallel()
	err := &notification.SendError{Class: notification.ErrCredentialsRejected, Code: "UNAUTHENTICATED"}
	assert.ErrorIs(t, err, notification.ErrMisconfigured)
	assert.ErrorIs(t, err, notification.ErrCredentialsRejected)
	assert.NotErrorIs(t, &notification.SendError{Class: notification.ErrMisconfigured}, notification.ErrCredentialsRejected)
}
