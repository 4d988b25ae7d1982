package adapters_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// An FCM (or a proxy in front of it) answering garbage: a message name or
// an error message holding NUL or bytes that are not UTF-8, which Postgres
// refuses to store as text. The outcomes are recorded in batches: one such
// answer failed its whole batch, every outcome in it was given up after a
// lease, and every push in it, sent, was pushed again. Now the text is
// stored with those bytes replaced, and the batch with it.
func TestGarbageInAnFCMAnswerNeverFailsTheRecordingOfOtherOutcomes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	for _, tok := range []string{"t-name", "t-error", "t-fine"} {
		f.register("alice", tok, notification.PlatformAndroid)
		f.deliver("alice", "", tok)
	}
	now := time.Now()
	claimed, err := f.repo.ClaimDue(ctx, now, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 3)
	policy := notification.RetryPolicy{MaxAttempts: 5, BaseDelay: time.Second, MaxDelay: time.Minute}
	var ds []*notification.Delivery
	for _, c := range claimed {
		d := c.Delivery
		switch d.Token() {
		case "t-name":
			require.NoError(t, d.MarkSent("projects/p/messages/\x00\xff\xfe", now))
		case "t-error":
			_, err := d.RecordFailure(&notification.SendError{Class: notification.ErrProviderUnavailable, Code: "INTERNAL",
				Reason: "upstream said \x00\xc3\x28 and hung up"}, policy, now, 0)
			require.NoError(t, err)
		default:
			require.NoError(t, d.MarkSent("projects/p/messages/1", now))
		}
		ds = append(ds, d)
	}
	recorded, err := f.repo.Record(ctx, ds)
	require.NoError(t, err)
	assert.Equal(t, 3, recorded)

	rows, err := f.pool.Query(ctx, `SELECT token, status, message_name, last_error FROM herald_deliveries ORDER BY token`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var token, status, name, lastError string
		require.NoError(t, rows.Scan(&token, &status, &name, &lastError))
		assert.True(t, utf8.ValidString(name) && !strings.Contains(name, "\x00"), "%s: %q", token, name)
		switch token {
		case "t-name":
			assert.Equal(t, "sent", status)
			assert.True(t, strings.HasPrefix(name, "projects/p/messages/"), name)
		case "t-error":
			assert.Equal(t, "retry_scheduled", status)
			assert.Contains(t, lastError, "upstream said")
		}
	}
	require.NoError(t, rows.Err())
}

// A dead token that the host's own tables hold on to (here a foreign key
// without ON DELETE) cannot be deleted. The outcome batch that found it dead
// failed with it, and every push in the batch, sent, was pushed again after
// its lease. The outcomes are now recorded; the token stays, to be tried
// again at its next UNREGISTERED.
func TestADeadTokenTheHostHoldsOnToNeverFailsTheRecordingOfOtherOutcomes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	for _, tok := range []string{"t-held", "t-fine"} {
		f.register("alice", tok, notification.PlatformAndroid)
		f.deliver("alice", "", tok)
	}
	_, err := f.pool.Exec(ctx, `
		CREATE TABLE host_support_tickets (id int PRIMARY KEY, token text REFERENCES herald_device_tokens (token));
		INSERT INTO host_support_tickets VALUES (1, 't-held');`)
	require.NoError(t, err)
	now := time.Now()
	claimed, err := f.repo.ClaimDue(ctx, now, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 2)
	policy := notification.RetryPolicy{MaxAttempts: 5, BaseDelay: time.Second, MaxDelay: time.Minute}
	var ds []*notification.Delivery
	for _, c := range claimed {
		d := c.Delivery
		if d.Token() == "t-held" {
			_, err := d.RecordFailure(&notification.SendError{Class: notification.ErrTokenUnregistered, Code: "UNREGISTERED",
				Reason: "gone"}, policy, now, 0)
			require.NoError(t, err)
		} else {
			require.NoError(t, d.MarkSent("projects/p/messages/1", now))
		}
		ds = append(ds, d)
	}
	recorded, err := f.repo.Record(ctx, ds)
	require.NoError(t, err)
	assert.Equal(t, 2, recorded)
	rows, err := f.pool.Query(ctx, `SELECT token, status FROM herald_deliveries ORDER BY token`)
	require.NoError(t, err)
	statuses := map[string]string{}
	for rows.Next() {
		var token, status string
		require.NoError(t, rows.Scan(&token, &status))
		statuses[token] = status
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, map[string]string{"t-fine": "sent", "t-held": "token_pruned"}, statuses)
	var kept bool
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM herald_device_tokens WHERE token = 't-held')`).Scan(&kept))
	assert.True(t, kept, "the host holds on to the token")
}
