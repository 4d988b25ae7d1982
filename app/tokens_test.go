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

// A token no registry could hold (a NUL, bytes that are not UTF-8: an app
// reporting garbage as gone) is unknown, and removing an unknown token is
// not an error; it failed with Postgres's refusal of the bytes, and a host
// retrying the failed call retried it for ever. A user id Herald never
// stores is refused by List and the preferences' Get and Delete, as the
// inbox refuses it, rather than sent to Postgres to fail there.
func TestUnregisteringATokenNoRegistryCouldHoldIsNotAnError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tokens := app.NewTokens(adapters.NewPostgresDeviceTokenRepository(testutil.NewPool(t)), nil)
	require.NoError(t, tokens.Register(ctx, "ann", "phone", notification.PlatformAndroid))
	for _, garbage := range []string{"phone\x00", "\xff\xfephone", ""} {
		assert.NoError(t, tokens.Unregister(ctx, garbage), "%q", garbage)
	}
	list, err := tokens.List(ctx, "ann")
	require.NoError(t, err)
	assert.Len(t, list, 1, "ann's phone stays")

	prefs := app.NewUserPreferences(adapters.NewPostgresPreferenceRepository(testutil.NewPool(t)), nil)
	for _, user := range []string{"ann\x00", "\xff\xfe", ""} {
		var fe *notification.FieldError
		_, err := tokens.List(ctx, user)
		assert.ErrorAs(t, err, &fe, "list %q", user)
		_, err = prefs.Get(ctx, user)
		assert.ErrorAs(t, err, &fe, "get preferences %q", user)
		_, err = prefs.Delete(ctx, user)
		assert.ErrorAs(t, err, &fe, "delete preferences %q", user)
	}
}
