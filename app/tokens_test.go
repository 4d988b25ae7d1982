package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestTokenRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tokens := app.NewTokens(adapters.NewPostgresDeviceTokenRepository(testutil.NewPool(t)), clock)

	require.NoError(t, tokens.Register(ctx, "ann", "phone", notification.PlatformAndroid))
	now = now.Add(time.Hour)
	require.NoError(t, tokens.Register(ctx, "ann", "phone", notification.PlatformAndroid), "registering again is an upsert")
	list, err := tokens.List(ctx, "ann")
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, now.Add(-time.Hour), list[0].RegisteredAt().UTC())
	assert.Equal(t, now, list[0].LastSeenAt().UTC())

	// The phone changes hands: the token moves to bob.
	require.NoError(t, tokens.Register(ctx, "bob", "phone", notification.PlatformAndroid))
	list, err = tokens.List(ctx, "ann")
	require.NoError(t, err)
	assert.Empty(t, list)
	list, err = tokens.List(ctx, "bob")
	require.NoError(t, err)
	require.Len(t, list, 1)

	require.ErrorIs(t, tokens.Register(ctx, "bob", "bad token", notification.PlatformAndroid), notification.ErrInvalidToken)

	require.NoError(t, tokens.Register(ctx, "bob", "tablet", notification.PlatformIOS))
	require.NoError(t, tokens.Unregister(ctx, "tablet"))
	require.NoError(t, tokens.Unregister(ctx, "tablet"), "unregistering twice is fine")
	list, err = tokens.List(ctx, "bob")
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "phone", list[0].Token())
}
