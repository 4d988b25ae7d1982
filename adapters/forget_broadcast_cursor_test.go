package adapters_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	created, found, err := f.repo.ExpandBroadcastChunk(ctx, 2) // ann's and alice's phone: the cursor stops at hers
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
		_, found, err := f.repo.ExpandBroadcastChunk(ctx, 2)
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
