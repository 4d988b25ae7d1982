package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// Notify is a host event whose rule returns its draft as it is: the tests of
// the draft's features raise exactly the draft they mean.
type Notify struct {
	Draft notification.Draft `json:"draft"`
}

func (Notify) EventType() string { return "notify" }

// newDraftHarness is newHarness with the Notify rule registered too.
func newDraftHarness(t *testing.T, cfg herald.Config) *harness {
	t.Helper()
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	require.NoError(t, notification.On(rules, func(e Notify) ([]notification.Draft, error) {
		return []notification.Draft{e.Draft}, nil
	}))
	h, err := herald.New(pool, client, rules, cfg)
	require.NoError(t, err)
	return &harness{t: t, pool: pool, fake: fake, herald: h}
}

// register registers one token of the platform for user.
func (h *harness) register(user, token string, p notification.Platform) {
	h.t.Helper()
	require.NoError(h.t, h.herald.Tokens().Register(context.Background(), user, token, p))
}

// notify raises one draft in its own committed transaction.
func (h *harness) notify(d notification.Draft) *notification.Notification {
	h.t.Helper()
	ns := h.raise(true, Notify{Draft: d})
	require.Len(h.t, ns, 1)
	return ns[0]
}

// waitIdle waits until Herald has nothing left to relay or send.
func (h *harness) waitIdle(within time.Duration) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	require.NoError(h.t, h.herald.WaitIdle(ctx))
}

// countRows counts rows of a query's first column.
func (h *harness) countRows(query string, args ...any) int {
	h.t.Helper()
	var n int
	require.NoError(h.t, h.pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

// inboxTitles lists the titles in user's inbox, newest first.
func (h *harness) inboxTitles(user string) []string {
	h.t.Helper()
	page, err := h.herald.Inbox().List(context.Background(), user, "", 50)
	require.NoError(h.t, err)
	titles := []string{}
	for _, n := range page.Notifications {
		titles = append(titles, n.Content().Title)
	}
	return titles
}

func draft(user, title string) notification.Draft {
	return notification.Draft{Recipient: user, Type: "note", Content: notification.Content{Title: title}}
}

func TestNotifyRaisesItsDraftAsIs(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok-1", notification.PlatformAndroid)
	h.run()
	n := h.notify(draft("u", "hello"))
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	assert.Equal(t, "hello", h.fake.AcceptedFor("tok-1")[0].Title)
}
