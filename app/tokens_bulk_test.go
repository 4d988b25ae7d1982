package app_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// storedToken is one row of the registry, as a test compares it.
type storedToken struct {
	Token, UserID, Platform string
	RegisteredAt            time.Time
}

func storedTokens(t *testing.T, pool *pgxpool.Pool) []storedToken {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT token, user_id, platform, registered_at FROM herald_device_tokens ORDER BY token`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[storedToken])
	require.NoError(t, err)
	return out
}

func TestABadEntryAnywhereRefusesTheWholeImportNamingItsIndex(t *testing.T) {
	t.Parallel()
	// The bad entry sits past the first chunk (5,000), so an import that
	// wrote chunk by chunk while validating would leave rows behind.
	const n, bad = 8000, 7321
	cases := []struct {
		name     string
		spoil    func(r *app.TokenRegistration)
		field    string
		sentinel error
	}{
		{"token with a space", func(r *app.TokenRegistration) { r.Token = "bad token" }, "token", notification.ErrInvalidToken},
		{"empty token", func(r *app.TokenRegistration) { r.Token = "" }, "token", notification.ErrInvalidToken},
		{"overlong token", func(r *app.TokenRegistration) { r.Token = string(make([]byte, notification.MaxTokenLength+1)) }, "token", notification.ErrInvalidToken},
		{"empty user", func(r *app.TokenRegistration) { r.UserID = "" }, "user_id", notification.ErrRequired},
		{"user with a NUL", func(r *app.TokenRegistration) { r.UserID = "ann\x00" }, "user_id", notification.ErrInvalidUTF8},
		{"user not utf-8", func(r *app.TokenRegistration) { r.UserID = "\xff\xfe" }, "user_id", notification.ErrInvalidUTF8},
		{"unknown platform", func(r *app.TokenRegistration) { r.Platform = "symbian" }, "platform", notification.ErrUnknownPlatform},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool := testutil.NewPool(t)
			tokens := app.NewTokens(adapters.NewPostgresDeviceTokenRepository(pool), nil)
			regs := bulkRegistrations(n, "user")
			tc.spoil(&regs[bad])

			err := tokens.RegisterMany(context.Background(), regs)

			var regErr *app.RegistrationError
			require.ErrorAs(t, err, &regErr)
			assert.Equal(t, bad, regErr.Index)
			assert.ErrorIs(t, err, tc.sentinel)
			var fieldErr *notification.FieldError
			require.ErrorAs(t, err, &fieldErr)
			assert.Equal(t, tc.field, fieldErr.Field)
			assert.Contains(t, err.Error(), fmt.Sprint(bad))
			assert.Empty(t, storedTokens(t, pool), "nothing of a refused import is written")
		})
	}
}

func TestAnImportedTokenMovesToItsNewOwnerAndClosesThePreviousOwnersWaitingPushes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	tokens := app.NewTokens(adapters.NewPostgresDeviceTokenRepository(pool), nil)
	require.NoError(t, tokens.Register(ctx, "ann", "ann-phone", notification.PlatformAndroid))
	require.NoError(t, tokens.Register(ctx, "ann", "ann-tablet", notification.PlatformIOS))
	_, err := pool.Exec(ctx, `
		WITH n AS (
			INSERT INTO herald_notifications (id, recipient, type, created_at)
			VALUES (gen_random_uuid(), 'ann', 'comment', now()) RETURNING id
		)
		INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT n.id, t, 'pending', now(), now(), now() FROM n, unnest(ARRAY['ann-phone', 'ann-tablet']) t`)
	require.NoError(t, err)

	// The phone is in an import from the old system, now bob's.
	regs := append(bulkRegistrations(6000, "user"), app.TokenRegistration{UserID: "bob", Token: "ann-phone", Platform: notification.PlatformAndroid})
	require.NoError(t, tokens.RegisterMany(ctx, regs))

	owned, err := tokens.List(ctx, "bob")
	require.NoError(t, err)
	require.Len(t, owned, 1)
	assert.Equal(t, "ann-phone", owned[0].Token())
	owned, err = tokens.List(ctx, "ann")
	require.NoError(t, err)
	require.Len(t, owned, 1)
	assert.Equal(t, "ann-tablet", owned[0].Token())

	status := map[string]string{}
	rows, err := pool.Query(ctx, `SELECT token, status || '/' || coalesce(error_code, '') FROM herald_deliveries`)
	require.NoError(t, err)
	for rows.Next() {
		var token, s string
		require.NoError(t, rows.Scan(&token, &s))
		status[token] = s
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, map[string]string{
		"ann-phone":  "token_moved/TOKEN_MOVED",
		"ann-tablet": "pending/",
	}, status, "ann's push to the phone bob now owns never leaves; her tablet's still does")
}

func TestRerunningAnImportChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	regs := bulkRegistrations(12000, "user")
	// Two tokens change hands within the import, in later chunks: the later
	// entry wins.
	moved := regs[10].Token
	regs[11000].Token, regs[11001].Token = moved, regs[4999].Token

	whole := testutil.NewPool(t)
	tokens := app.NewTokens(adapters.NewPostgresDeviceTokenRepository(whole), clock)
	require.NoError(t, tokens.RegisterMany(ctx, regs))
	want := storedTokens(t, whole)
	require.Len(t, want, 12000-2)
	owned, err := tokens.List(ctx, "user-11000")
	require.NoError(t, err)
	require.Len(t, owned, 1)
	require.Equal(t, moved, owned[0].Token())
	// The token's final owner has a push waiting for it.
	_, err = whole.Exec(ctx, `
		WITH n AS (
			INSERT INTO herald_notifications (id, recipient, type, created_at)
			VALUES (gen_random_uuid(), 'user-11000', 'comment', now()) RETURNING id
		)
		INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT n.id, $1, 'pending', now(), now(), now() FROM n`, moved)
	require.NoError(t, err)

	// Rerunning the same import later changes no owner, platform or
	// registration time, and closes no push.
	now = now.Add(time.Hour)
	require.NoError(t, tokens.RegisterMany(ctx, regs))
	assertSameTokens(t, want, storedTokens(t, whole))
	var status string
	require.NoError(t, whole.QueryRow(ctx, `SELECT status FROM herald_deliveries`).Scan(&status))
	assert.Equal(t, "pending", status, "a rerun never closes the final owner's push")

	// An import that failed after its first chunks, then ran again, ends
	// where one clean run does.
	now = now.Add(-time.Hour)
	interrupted := testutil.NewPool(t)
	tokens = app.NewTokens(adapters.NewPostgresDeviceTokenRepository(interrupted), clock)
	require.NoError(t, tokens.RegisterMany(ctx, regs[:7000]))
	require.NoError(t, tokens.RegisterMany(ctx, regs))
	assertSameTokens(t, want, storedTokens(t, interrupted))
}

// assertSameTokens compares two registries row by row, reporting at most a
// few differing rows (a full dump of thousands is unreadable).
func assertSameTokens(t *testing.T, want, got []storedToken) {
	t.Helper()
	require.Len(t, got, len(want))
	var diffs []string
	for i := range want {
		if want[i].Token != got[i].Token || want[i].UserID != got[i].UserID ||
			want[i].Platform != got[i].Platform || !want[i].RegisteredAt.Equal(got[i].RegisteredAt) {
			diffs = append(diffs, fmt.Sprintf("row %d: want %s/%s at %s, got %s/%s at %s", i,
				want[i].UserID, want[i].Platform, want[i].RegisteredAt, got[i].UserID, got[i].Platform, got[i].RegisteredAt))
		}
	}
	assert.Empty(t, diffs[:min(len(diffs), 5)], "%d rows differ", len(diffs))
}

func TestTenThousandTokensImportInOneCall(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	tokens := app.NewTokens(adapters.NewPostgresDeviceTokenRepository(pool), nil)
	regs := bulkRegistrations(10000, "user")
	// Repeats within one chunk and across chunks: the last entry wins.
	regs[20] = app.TokenRegistration{UserID: "carol", Token: regs[10].Token, Platform: notification.PlatformWeb}
	regs[9999] = app.TokenRegistration{UserID: "dave", Token: regs[1].Token, Platform: notification.PlatformIOS}

	require.NoError(t, tokens.RegisterMany(ctx, regs))

	stored := storedTokens(t, pool)
	assert.Len(t, stored, 10000-2)
	owner := make(map[string]string, len(stored))
	for _, s := range stored {
		owner[s.Token] = s.UserID + "/" + s.Platform
	}
	assert.Equal(t, "carol/web", owner[regs[10].Token])
	assert.Equal(t, "dave/ios", owner[regs[1].Token])
	assert.Equal(t, "user-5000/android", owner[regs[5000].Token])
	assert.Equal(t, "user-9998/android", owner[regs[9998].Token])
	require.NoError(t, tokens.RegisterMany(ctx, nil), "an empty import does nothing")
	require.True(t, errors.Is(tokens.RegisterMany(ctx, []app.TokenRegistration{{}}), notification.ErrRequired))
}

// Two imports of the same tokens at once (an import rerun while the first
// run still goes, or two sources listing the same devices in different
// orders) both complete. Each chunk locks its tokens' rows as it upserts
// them: in input order, two chunks sharing tokens in opposite orders each
// waited for the other, and Postgres failed one with a deadlock.
func TestTwoImportsOfTheSameTokensInAnyOrderBothComplete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	tokens := app.NewTokens(adapters.NewPostgresDeviceTokenRepository(pool), nil)
	for round := range 5 {
		regs := bulkRegistrations(2000, fmt.Sprintf("round%d", round))
		reversed := slices.Clone(regs)
		slices.Reverse(reversed)
		errs := make(chan error, 2)
		for _, batch := range [][]app.TokenRegistration{regs, reversed} {
			go func() { errs <- tokens.RegisterMany(ctx, batch) }()
		}
		for range 2 {
			require.NoError(t, <-errs, "round %d", round)
		}
	}
}
