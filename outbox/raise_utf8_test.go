package outbox_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

type latin1Event struct{ UserID string }

func (latin1Event) EventType() string { return "latin1" }

// A hand-written MarshalJSON that copies a legacy Latin-1 field verbatim:
// valid JSON to encoding/json, invalid text to Postgres.
func (e latin1Event) MarshalJSON() ([]byte, error) {
	return []byte(`{"user_id":"` + e.UserID + `","name":"Jos` + "\xe9" + `"}`), nil
}

// Raise refuses an event whose JSON Postgres would refuse, before writing
// anything, so the host's transaction goes on.
func TestAnEventWhoseJSONIsNotUTF8IsRefusedAndTheTransactionGoesOn(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := context.Background()
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, func(e latin1Event) ([]notification.Draft, error) { return toUser(e.UserID), nil }))
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = ob.Raise(ctx, tx, latin1Event{UserID: "u1"})
	assert.ErrorIs(t, err, notification.ErrMalformedEvent)
	_, err = tx.Exec(ctx, `SELECT 1`)
	require.NoError(t, err, "the host's transaction is still usable")
	var written int
	require.NoError(t, tx.QueryRow(ctx, `SELECT count(*) FROM herald_notifications`).Scan(&written))
	assert.Zero(t, written)
}
