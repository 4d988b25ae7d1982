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

// outcomeOf is what happens to a claimed delivery's push.
type outcomeOf func(d *notification.Delivery, now time.Time) error

func sent(name string) outcomeOf {
	return func(d *notification.Delivery, now time.Time) error { return d.MarkSent(name, now) }
}

func failed(se *notification.SendError) outcomeOf {
	return func(d *notification.Delivery, now time.Time) error {
		_, err := d.RecordFailure(se, notification.RetryPolicy{MaxAttempts: 5, BaseDelay: time.Second, MaxDelay: time.Minute}, now, 0)
		return err
	}
}

// claimedWith gives alice one pending delivery per token of outcomes
// (registered first, after prepare runs), claims them all and applies each
// token's outcome, ready to be recorded.
func claimedWith(t *testing.T, f *ownershipFixture, outcomes map[string]outcomeOf, prepare string) []*notification.Delivery {
	t.Helper()
	ctx := context.Background()
	for tok := range outcomes {
		f.register("alice", tok, notification.PlatformAndroid)
		f.deliver("alice", "", tok)
	}
	if prepare != "" {
		_, err := f.pool.Exec(ctx, prepare)
		require.NoError(t, err)
	}
	now := time.Now()
	claimed, err := f.repo.ClaimDue(ctx, now, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, len(outcomes))
	ds := make([]*notification.Delivery, 0, len(claimed))
	for _, c := range claimed {
		require.NoError(t, outcomes[c.Delivery.Token()](c.Delivery, now))
		ds = append(ds, c.Delivery)
	}
	return ds
}

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
	ds := claimedWith(t, f, map[string]outcomeOf{
		"t-name": sent("projects/p/messages/\x00\xff\xfe"),
		"t-error": failed(&notification.SendError{Class: notification.ErrProviderUnavailable, Code: "INTERNAL",
			Reason: "upstream said \x00\xc3\x28 and hung up"}),
		"t-fine": sent("projects/p/messages/1"),
	}, "")
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
	ds := claimedWith(t, f, map[string]outcomeOf{
		"t-held": failed(&notification.SendError{Class: notification.ErrTokenUnregistered, Code: "UNREGISTERED", Reason: "gone"}),
		"t-fine": sent("projects/p/messages/1"),
	}, `CREATE TABLE host_support_tickets (id int PRIMARY KEY, token text REFERENCES herald_device_tokens (token));
		INSERT INTO host_support_tickets VALUES (1, 't-held');`)
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
