package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// A broadcast cancelled while the relay was recording it (its transaction
// read the notification before the cancel and commits the broadcast's row
// after the cancel finished the rows it could see) stops expanding all the
// same: the expander creates no delivery for a cancelled notification and
// finishes it.
func TestCancellingABroadcastWhileTheRelayRecordsItStopsItsExpansion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	for _, tok := range []string{"a-phone", "b-phone", "c-phone"} {
		f.register("u-"+tok, tok, notification.PlatformAndroid)
	}
	id := uuid.New()
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
		VALUES ($1, '', 'news', 'for all', '{}', now())`, id)
	require.NoError(t, err)

	relay, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer relay.Rollback(ctx) //nolint:errcheck // test
	_, err = adapters.NewPostgresDeliveryRepository(relay).Expand(ctx, []uuid.UUID{id})
	require.NoError(t, err)

	cancelled := make(chan error, 1)
	go func() {
		_, err := f.repo.CancelNotification(ctx, id)
		cancelled <- err
	}()
	select {
	case err := <-cancelled:
		require.NoError(t, err)
		require.NoError(t, relay.Commit(ctx))
	case <-time.After(2 * time.Second): // the cancel waits for the relay
		require.NoError(t, relay.Commit(ctx))
		require.NoError(t, <-cancelled)
	}

	chunk, err := f.repo.ExpandBroadcastChunk(ctx, 10)
	created := chunk.Created
	require.NoError(t, err)
	assert.Zero(t, created, "a cancelled broadcast is expanded")
	var unfinished int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_broadcasts WHERE finished_at IS NULL`).Scan(&unfinished))
	assert.Zero(t, unfinished, "the cancelled broadcast is still expanding")
}
