package notification_test

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

var policy = notification.RetryPolicy{MaxAttempts: 3, BaseDelay: 10 * time.Second, MaxDelay: time.Hour}

func claimed(attempts int) *notification.Delivery {
	return notification.DeliveryFromDatabase(7, uuid.New(), "tok", notification.StatusClaimed, attempts,
		now.Add(time.Minute), uuid.New(), "", "", "", now)
}

func sendErr(class error, code string) error {
	return &notification.SendError{Class: class, Code: code}
}

func TestRecordFailureByClass(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		err          error
		attempts     int
		wantStatus   notification.DeliveryStatus
		wantAttempts int
	}{
		{"unregistered prunes the token", sendErr(notification.ErrTokenUnregistered, "UNREGISTERED"), 0, notification.StatusTokenPruned, 1},
		{"invalid token prunes the token", sendErr(notification.ErrTokenRejected, "INVALID_ARGUMENT"), 0, notification.StatusTokenPruned, 1},
		{"invalid message fails for good", sendErr(notification.ErrMessageRejected, "INVALID_ARGUMENT"), 0, notification.StatusFailed, 1},
		{"a refused configuration fails for good", sendErr(notification.ErrMisconfigured, "PERMISSION_DENIED"), 0, notification.StatusFailed, 1},
		{"a token of another project is pruned", sendErr(notification.ErrSenderMismatch, "SENDER_ID_MISMATCH"), 0, notification.StatusTokenPruned, 1},
		{"rejected apns credentials are retried", sendErr(notification.ErrPlatformAuthRejected, "THIRD_PARTY_AUTH_ERROR"), 0, notification.StatusRetryScheduled, 1},
		{"rejected apns credentials fail on the last attempt", sendErr(notification.ErrPlatformAuthRejected, "THIRD_PARTY_AUTH_ERROR"), 2, notification.StatusFailed, 3},
		{"unavailable is retried", sendErr(notification.ErrProviderUnavailable, "UNAVAILABLE"), 0, notification.StatusRetryScheduled, 1},
		{"quota is retried", sendErr(notification.ErrQuotaExceeded, "QUOTA_EXCEEDED"), 1, notification.StatusRetryScheduled, 2},
		{"an unclassified error is retried", errors.New("connection reset"), 0, notification.StatusRetryScheduled, 1},
		{"last attempt fails", sendErr(notification.ErrProviderUnavailable, "INTERNAL"), 2, notification.StatusFailed, 3},
		{"circuit open counts no attempt", sendErr(notification.ErrCircuitOpen, ""), 0, notification.StatusPending, 0},
		{"circuit open after a failure stays scheduled", sendErr(notification.ErrCircuitOpen, ""), 1, notification.StatusRetryScheduled, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := claimed(tt.attempts)
			status, err := d.RecordFailure(tt.err, policy, now, 0.5)
			require.NoError(t, err)
			assert.Equal(t, tt.wantStatus, status)
			assert.Equal(t, tt.wantStatus, d.Status())
			assert.Equal(t, tt.wantAttempts, d.Attempts())
			if !tt.wantStatus.IsFinal() {
				assert.True(t, d.DueAt().After(now), "an open delivery is due later")
			}
		})
	}
}

func TestRetryAfterIsAFloor(t *testing.T) {
	t.Parallel()
	d := claimed(0)
	err := &notification.SendError{Class: notification.ErrQuotaExceeded, RetryAfter: 2 * time.Minute}
	_, recErr := d.RecordFailure(err, policy, now, 0)
	require.NoError(t, recErr)
	assert.Equal(t, now.Add(2*time.Minute), d.DueAt())
}

func TestMarkSentOnlyFromClaimed(t *testing.T) {
	t.Parallel()
	d := claimed(0)
	require.NoError(t, d.MarkSent("projects/p/messages/1", now))
	assert.Equal(t, notification.StatusSent, d.Status())
	assert.Equal(t, 1, d.Attempts())
	assert.Equal(t, "projects/p/messages/1", d.MessageName())

	require.ErrorIs(t, d.MarkSent("again", now), notification.ErrInvalidTransition)
	_, err := d.RecordFailure(sendErr(notification.ErrProviderUnavailable, ""), policy, now, 0)
	require.ErrorIs(t, err, notification.ErrInvalidTransition)
}

// A broken or hostile answer naming the message with megabytes is not
// stored whole with every delivery.
func TestAMessageNameFromFCMIsKeptToAFewHundredBytes(t *testing.T) {
	t.Parallel()
	d := claimed(0)
	require.NoError(t, d.MarkSent("projects/p/messages/"+strings.Repeat("é", 1<<20), now))
	assert.LessOrEqual(t, len(d.MessageName()), 256)
	assert.True(t, utf8.ValidString(d.MessageName()), "cut on a character boundary")
	assert.True(t, strings.HasPrefix(d.MessageName(), "projects/p/messages/é"))
}

func TestReleaseKeepsAttempts(t *testing.T) {
	t.Parallel()
	d := claimed(2)
	require.NoError(t, d.Release(now.Add(time.Second), now))
	assert.Equal(t, notification.StatusRetryScheduled, d.Status())
	assert.Equal(t, 2, d.Attempts())
	assert.Equal(t, now.Add(time.Second), d.DueAt())
}

func TestRetryPolicyDelay(t *testing.T) {
	t.Parallel()
	p := notification.RetryPolicy{MaxAttempts: 10, BaseDelay: 10 * time.Second, MaxDelay: time.Minute}
	tests := []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		jitter     float64
		want       time.Duration
	}{
		{"no jitter is the base", 1, 0, 0, 10 * time.Second},
		{"first failure jitters over one base", 1, 0, 0.5, 15 * time.Second},
		{"window doubles", 3, 0, 0.5, 30 * time.Second},
		{"capped", 8, 0, 0.99, time.Minute},
		{"retry-after beats a shorter delay", 1, 45 * time.Second, 0, 45 * time.Second},
		{"retry-after may exceed the cap", 1, 5 * time.Minute, 0, 5 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, p.Delay(tt.attempt, tt.retryAfter, tt.jitter))
		})
	}
}
