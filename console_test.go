package herald_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"

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

// TestTheConsoleOfAProcessThatDoesNotSendServesEveryPage: an admin process
// (a Herald without an FCM client) serves every page of the console from
// the database, cancels a notification through its confirmation page,
// and answers 404 for a notification that does not exist.
func TestTheConsoleOfAProcessThatDoesNotSendServesEveryPage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	h, err := herald.New(pool, nil, rules, fastConfig())
	require.NoError(t, err)
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	ns, err := h.Raise(ctx, tx, comment("m1", "ann", "author"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	id := ns[0].ID().String()

	srv := httptest.NewServer(h.Console(herald.ConsoleOptions{}))
	t.Cleanup(srv.Close)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/", "/failed", "/failed?code=UNAVAILABLE", "/deadletters", "/deadletters?all=1",
		"/search?q=author", "/notification?id=" + id,
		// User ids Herald never stores: a user with nothing, not an error.
		"/search?q=" + strings.Repeat("u", 256), "/search?q=%FF%FE", "/search?q=a%00b"} {
		status, body := get(path)
		assert.Equal(t, http.StatusOK, status, "%s: %s", path, body)
	}
	status, _ := get("/notification?id=" + uuid.NewString())
	assert.Equal(t, http.StatusNotFound, status)

	_, body := get("/notification?id=" + id)
	assert.Contains(t, body, "Cancel it before it is sent", "not expanded yet: cancel is offered")
	status, body = get("/cancel?id=" + id)
	require.Equal(t, http.StatusOK, status)
	token := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	require.NotNil(t, token)
	resp, err := client.PostForm(srv.URL+"/cancel", url.Values{"id": {id}, "csrf": {token[1]}})
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "followed to the timeline: %s", b)
	assert.Contains(t, string(b), "0 undelivered pushes cancelled.")
	assert.Contains(t, string(b), "<dt>Cancelled</dt>")
	tl, err := h.Timeline(ctx, ns[0].ID())
	require.NoError(t, err)
	assert.False(t, tl.Notification.CancelledAt.IsZero(), "the relay will create no delivery for it")

	resp, err = client.PostForm(srv.URL+"/cancel", url.Values{"id": {uuid.NewString()}, "csrf": {token[1]}})
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// TestTheConsoleShowsTheDeliveriesTheDatabaseRefusedOfABroadcast: a
// host's trigger or constraint on herald_deliveries refusing some of a
// broadcast's deliveries is counted on the broadcast; Status and the CLI
// showed it, and so do the console's overview and the notification's page,
// the reason (the host database's text) as text.
func TestTheConsoleShowsTheDeliveriesTheDatabaseRefusedOfABroadcast(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	h, err := herald.New(pool, nil, notification.NewRules(), fastConfig())
	require.NoError(t, err)
	id := uuid.New()
	// The broadcast as the expander leaves it after a refusal.
	_, err = pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
		VALUES ($1, '', 'announcement', 'for all', '{}', now())`, id)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO herald_broadcasts (notification_id, expanded, refused, refusal, created_at)
		VALUES ($1, 1000, 2, 'tok_0123456789ab: ERROR: <b>no pushes</b> to this device (SQLSTATE P0001)', now())`, id)
	require.NoError(t, err)

	srv := httptest.NewServer(h.Console(herald.ConsoleOptions{}))
	t.Cleanup(srv.Close)
	for _, path := range []string{"/", "/notification?id=" + id.String()} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		body := string(b)
		assert.Contains(t, body, "Refused by the database", path)
		assert.Contains(t, body, "tok_0123456789ab: ERROR: &lt;b&gt;no pushes&lt;/b&gt; to this device", path)
		assert.NotContains(t, body, "<b>no pushes", path)
	}
}

// TestTheConsolesUserPageStaysSmallHoweverManyDevicesTheUserRegistered: a
// user id may hold any number of device tokens (a client registering in a
// loop, an import under one id). The user's page read and rendered every
// one of them; it lists the 100 most recently seen and says so, as it does
// their deliveries and notifications.
func TestTheConsolesUserPageStaysSmallHoweverManyDevicesTheUserRegistered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	h, err := herald.New(pool, nil, notification.NewRules(), fastConfig())
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT 'hoarder-device-' || i, 'hoarder', 'android', now(), now() - i * interval '1 second'
		FROM generate_series(1, 5000) i`)
	require.NoError(t, err)

	srv := httptest.NewServer(h.Console(herald.ConsoleOptions{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/search?q=hoarder")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	page := string(b)
	assert.Equal(t, 100, strings.Count(page, `<td class="mono">tok_`), "devices listed")
	assert.Contains(t, page, herald.TokenHash("hoarder-device-1"), "the most recently seen first")
	assert.NotContains(t, page, herald.TokenHash("hoarder-device-101"))
	assert.Contains(t, page, "The 100 most recently seen are listed.")
}
