package herald_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// TestTheConsoleShowsContentOnlyWhenTheHostOptsIn: a user's page in the
// console shows their devices by token hash and never the token, and the
// title and body of their notifications only with ShowContent.
func TestTheConsoleShowsContentOnlyWhenTheHostOptsIn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	h, err := herald.New(pool, nil, rules, fastConfig()) // an admin process: no FCM
	require.NoError(t, err)
	require.NoError(t, h.Tokens().Register(ctx, "author", "author-phone-token", notification.PlatformAndroid))
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = h.Raise(ctx, tx, comment("m1", "ann", "author"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))

	userPage := func(opts herald.ConsoleOptions) string {
		srv := httptest.NewServer(h.Console(opts))
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/search?q=author")
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(b)
	}
	hidden := userPage(herald.ConsoleOptions{})
	assert.Contains(t, hidden, herald.TokenHash("author-phone-token"))
	assert.Contains(t, hidden, notification.CommentCreatedType)
	assert.NotContains(t, hidden, "author-phone-token")
	assert.NotContains(t, hidden, "Go in Practice")
	assert.NotContains(t, hidden, "commented on your course")

	shown := userPage(herald.ConsoleOptions{ShowContent: true})
	assert.Contains(t, shown, "New comment on Go in Practice")
	assert.Contains(t, shown, "Ann commented on your course")
	assert.NotContains(t, shown, "author-phone-token")
}
