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

// TestAHundredThousandBadDraftsAreRefusedWithAnErrorOfBoundedSize: a rule
// returning 100,000 drafts without a recipient. Before, Raise's error named
// every one: 7 MB of text, and 23 MB of heap, to be logged by the host.
func TestAHundredThousandBadDraftsAreRefusedWithAnErrorOfBoundedSize(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := context.Background()
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, func(e bulletinEvent) ([]notification.Draft, error) {
		ds := make([]notification.Draft, e.Users)
		for i := range ds {
			ds[i] = notification.Draft{Type: "bulletin", Content: notification.Content{Title: "news"}}
		}
		return ds, nil
	}))
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // test
	_, err = ob.Raise(ctx, tx, bulletinEvent{Users: 100_000})
	require.Error(t, err)
	assert.ErrorIs(t, err, notification.ErrRequired)
	var fe *notification.FieldError
	assert.ErrorAs(t, err, &fe)
	assert.Less(t, len(err.Error()), 64<<10)
	assert.Contains(t, err.Error(), "99900 more")
	_, err = tx.Exec(ctx, `SELECT 1`)
	assert.NoError(t, err, "the transaction stays usable")
}
