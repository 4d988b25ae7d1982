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

// A broadcast half expanded when a user is forgotten may have stopped at
// one of their tokens: its cursor must not keep naming it, and the
// broadcast must carry on to everyone else exactly once.
func TestForgettingAUserLeavesNoBroadcastCursorNamingTheirTokenAndTheBroadcastCarriesOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("ann", "a-ann-phone", notification.PlatformAndroid)
	f.register("alice", "b-alice-phone", notification.PlatformAndroid)
	f.register("alice", "c-alice-tablet", notification.PlatformAndroid)
	f.register("bob", "d-bob-phone", notification.PlatformAndroid)
	id := uuid.New()
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
		VALUES ($1, '', 'news', 'for all', '{}', now())`, id)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_broadcasts (notification_id, created_at) VALUES ($1, now())`, id)
	require.NoError(t, err)
	chunk, err := f.repo.ExpandBroadcastChunk(ctx, 2) // ann's and alice's phone: the cursor stops at hers
	created, found := chunk.Created, chunk.Found
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, 2, created)

	_, err = f.repo.ForgetUser(ctx, "alice")
	require.NoError(t, err)
	var naming int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_broadcasts t
		WHERE strpos(row_to_json(t)::text, 'alice') > 0`).Scan(&naming))
	assert.Zero(t, naming, "no broadcast cursor names her token")

	for {
		chunk, err := f.repo.ExpandBroadcastChunk(ctx, 2)
		found := chunk.Found
		require.NoError(t, err)
		if !found {
			break
		}
	}
	rows, err := f.pool.Query(ctx, `SELECT token FROM herald_deliveries WHERE notification_id = $1 ORDER BY token`, id)
	require.NoError(t, err)
	var tokens []string
	for rows.Next() {
		var tok string
		require.NoError(t, rows.Scan(&tok))
		tokens = append(tokens, tok)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, []string{"a-ann-phone", "d-bob-phone"}, tokens, "everyone else once; nothing for her devices")
}

// A broadcast chunk being expanded while the user is forgotten (its
// transaction read their tokens before they went) must not leave
// deliveries to their tokens behind: forgetting waits for it.
func TestForgettingAUserWhileABroadcastChunkIsExpandedLeavesNoDeliveryToTheirTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "alice-phone", notification.PlatformAndroid)
	f.register("bob", "bob-phone", notification.PlatformAndroid)
	id := uuid.New()
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
		VALUES ($1, '', 'news', 'for all', '{}', now())`, id)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_broadcasts (notification_id, created_at) VALUES ($1, now())`, id)
	require.NoError(t, err)

	tx, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // test
	chunk, err := adapters.NewPostgresDeliveryRepository(tx).ExpandBroadcastChunk(ctx, 10)
	created := chunk.Created
	require.NoError(t, err)
	require.Equal(t, 2, created)
	forgotten := make(chan error, 1)
	go func() {
		_, err := f.repo.ForgetUser(ctx, "alice")
		forgotten <- err
	}()
	time.Sleep(300 * time.Millisecond) // forgetting is under way
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-forgotten)

	var named int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE token = 'alice-phone'`).Scan(&named))
	assert.Zero(t, named, "no delivery names her token")
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE token = 'bob-phone'`).Scan(&named))
	assert.Equal(t, 1, named, "bob's push is undisturbed")
}
