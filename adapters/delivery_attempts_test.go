package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// TestOnlyFailedAttemptsAreLogged: recording outcomes logs each failed
// attempt (retry scheduled, failed, pruned) with its code, and nothing
// for a push FCM accepted (the delivery row is that attempt) or one the
// breaker stopped (no attempt was made).
func TestOnlyFailedAttemptsAreLogged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	policy := notification.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Second, MaxDelay: time.Minute}
	outcomes := map[string]func(d *notification.Delivery, now time.Time) error{
		"sent": func(d *notification.Delivery, now time.Time) error { return d.MarkSent("projects/p/messages/1", now) },
		"stopped by the breaker": func(d *notification.Delivery, now time.Time) error {
			_, err := d.RecordFailure(&notification.SendError{Class: notification.ErrCircuitOpen}, policy, now, 0)
			return err
		},
		"unavailable": func(d *notification.Delivery, now time.Time) error {
			_, err := d.RecordFailure(&notification.SendError{Class: notification.ErrProviderUnavailable, Code: "UNAVAILABLE",
				Reason: "try later", CountsAgainstProvider: true}, policy, now, 0)
			return err
		},
		"unregistered": func(d *notification.Delivery, now time.Time) error {
			_, err := d.RecordFailure(&notification.SendError{Class: notification.ErrTokenUnregistered, Code: "UNREGISTERED",
				Reason: "gone"}, policy, now, 0)
			return err
		},
	}
	tokens := map[string]string{"sent": "t-sent", "stopped by the breaker": "t-stopped", "unavailable": "t-unavailable",
		"unregistered": "t-unregistered"}
	ids := map[string]int64{}
	for name, tok := range tokens {
		f.register("alice", tok, notification.PlatformAndroid)
		ids[name] = f.deliver("alice", "", tok)
	}
	now := time.Now()
	claimed, err := f.repo.ClaimDue(ctx, now, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 4)
	var ds []*notification.Delivery
	for _, c := range claimed {
		for name, id := range ids {
			if c.Delivery.ID() == id {
				require.NoError(t, outcomes[name](c.Delivery, now), name)
			}
		}
		ds = append(ds, c.Delivery)
	}
	recorded, err := f.repo.Record(ctx, ds)
	require.NoError(t, err)
	require.Equal(t, 4, recorded)

	rows, err := f.pool.Query(ctx, `SELECT delivery_id, attempt, outcome, error_code FROM herald_delivery_attempts ORDER BY id`)
	require.NoError(t, err)
	type logged struct {
		id      int64
		attempt int
		outcome string
		code    string
	}
	var got []logged
	for rows.Next() {
		var l logged
		require.NoError(t, rows.Scan(&l.id, &l.attempt, &l.outcome, &l.code))
		got = append(got, l)
	}
	require.NoError(t, rows.Err())
	assert.ElementsMatch(t, []logged{
		{ids["unavailable"], 1, "retry_scheduled", "UNAVAILABLE"},
		{ids["unregistered"], 1, "token_pruned", "UNREGISTERED"},
	}, got)
}
