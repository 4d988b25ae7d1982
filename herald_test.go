package herald_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }

// fastConfig shrinks every delay so the pipeline's behaviour shows in
// seconds; production defaults are documented on each field.
func fastConfig() herald.Config {
	return herald.Config{
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Sender: herald.SenderConfig{
			PollInterval: 50 * time.Millisecond,
			Retry:        notification.RetryPolicy{MaxAttempts: 4, BaseDelay: 200 * time.Millisecond, MaxDelay: time.Second},
			Lease:        10 * time.Second,
		},
		FCM: herald.FCMConfig{SendTimeout: 3 * time.Second, BreakerOpenFor: 500 * time.Millisecond},
	}
}

type harness struct {
	t      *testing.T
	pool   *pgxpool.Pool
	fake   *testutil.FakeFCM
	herald *herald.Herald
}

func newHarness(t *testing.T, cfg herald.Config) *harness {
	t.Helper()
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	h, err := herald.New(pool, client, rules, cfg)
	require.NoError(t, err)
	return &harness{t: t, pool: pool, fake: fake, herald: h}
}

// run starts Herald's relay and sender until the test ends.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		assert.NoError(h.t, h.herald.Run(ctx))
	}()
	h.t.Cleanup(func() { cancel(); wg.Wait() })
}

func (h *harness) registerTokens(user string, n int) []string {
	h.t.Helper()
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("%s-device-%04d", user, i)
		require.NoError(h.t, h.herald.Tokens().Register(context.Background(), user, tokens[i], notification.PlatformAndroid))
	}
	return tokens
}

// raise raises events in a host transaction that also writes a domain row,
// and commits or rolls back.
func (h *harness) raise(commit bool, events ...notification.Event) []*notification.Notification {
	h.t.Helper()
	ctx := context.Background()
	tx, err := h.pool.Begin(ctx)
	require.NoError(h.t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	_, err = tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS comments (id text PRIMARY KEY)`)
	require.NoError(h.t, err)
	for _, ev := range events {
		if c, ok := ev.(notification.CommentCreated); ok {
			_, err = tx.Exec(ctx, `INSERT INTO comments (id) VALUES ($1)`, c.CommentID)
			require.NoError(h.t, err)
		}
	}
	ns, err := h.herald.Raise(ctx, tx, events...)
	require.NoError(h.t, err)
	if commit {
		require.NoError(h.t, tx.Commit(ctx))
	}
	return ns
}

func (h *harness) statuses(n *notification.Notification) map[notification.DeliveryStatus]int {
	h.t.Helper()
	ds, err := h.herald.ListDeliveries(context.Background(), n.ID())
	require.NoError(h.t, err)
	counts := map[notification.DeliveryStatus]int{}
	for _, d := range ds {
		counts[d.Status()]++
	}
	return counts
}

func (h *harness) waitStatuses(n *notification.Notification, want map[notification.DeliveryStatus]int, within time.Duration) {
	h.t.Helper()
	require.EventuallyWithT(h.t, func(c *assert.CollectT) {
		assert.Equal(c, want, h.statuses(n))
	}, within, 20*time.Millisecond)
}

func comment(id, commenter, author string) notification.CommentCreated {
	return notification.CommentCreated{CourseID: "course-1", CourseTitle: "Go in Practice", CommentID: id,
		CommenterID: commenter, CommenterName: "Ann", CourseAuthorID: author}
}

func TestCommittedCommentReachesEveryDeviceOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	tokens := h.registerTokens("author", 3)
	h.run()

	ns := h.raise(true, comment("m1", "ann", "author"))
	require.Len(t, ns, 1)
	h.waitStatuses(ns[0], map[notification.DeliveryStatus]int{notification.StatusSent: 3}, 10*time.Second)

	for _, tok := range tokens {
		got := h.fake.AcceptedFor(tok)
		require.Len(t, got, 1, "exactly one push per device")
		assert.Equal(t, "New comment on Go in Practice", got[0].Title)
		assert.Equal(t, "m1", got[0].Data["comment_id"])
	}
	page, err := h.herald.Inbox().List(context.Background(), "author", "", 10)
	require.NoError(t, err)
	require.Len(t, page.Notifications, 1)
	assert.Equal(t, ns[0].ID(), page.Notifications[0].ID())
}

func TestRolledBackCommentSendsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 2)
	h.registerTokens("other-author", 2)
	h.run()

	h.raise(false, comment("rolled-back", "ann", "other-author"))
	// A committed event raised afterwards proves the relay and sender ran
	// past the rolled-back one.
	later := h.raise(true, comment("committed", "ann", "author"))
	testutil.WaitDelivered(t, h.pool, later[0].ID(), 10*time.Second)

	testutil.AssertNothingSent(t, h.pool, h.fake, "other-author", 10*time.Second)
	for _, r := range h.fake.Accepted() {
		assert.Equal(t, "committed", r.Data["comment_id"], "only the committed comment was pushed")
	}
	assert.Len(t, h.fake.Accepted(), 2)
}

func TestOwnCommentNotifiesNobody(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 1)
	ns := h.raise(true, comment("m1", "author", "author"))
	assert.Empty(t, ns)
}

func TestRecipientWith1200Tokens(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	tokens := make([]*notification.DeviceToken, 1200)
	now := time.Now()
	for i := range tokens {
		tok, err := notification.NewDeviceToken("busy-author", fmt.Sprintf("tok-%04d", i), notification.PlatformIOS, now)
		require.NoError(t, err)
		tokens[i] = tok
	}
	require.NoError(t, adapters.NewPostgresDeviceTokenRepository(h.pool).UpsertMany(context.Background(), tokens))
	h.run()

	ns := h.raise(true, comment("m1", "ann", "busy-author"))
	h.waitStatuses(ns[0], map[notification.DeliveryStatus]int{notification.StatusSent: 1200}, 30*time.Second)
	seen := map[string]bool{}
	for _, r := range h.fake.Accepted() {
		seen[r.Token] = true
	}
	assert.Len(t, seen, 1200)
	assert.Equal(t, int64(1200), h.fake.AcceptedCount(), "no duplicates")
}

func TestOversizedPayloadIsRejectedAndTheTransactionStaysUsable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	ctx := context.Background()
	tx, err := h.pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck

	big := comment("m-big", "ann", "author")
	big.CourseTitle = strings.Repeat("x", 5000)
	_, err = h.herald.Raise(ctx, tx, big)
	var tooLarge *notification.PayloadTooLargeError
	require.ErrorAs(t, err, &tooLarge)
	require.ErrorIs(t, err, notification.ErrPayloadTooLarge)

	// The host's transaction is untouched: it can go on and commit.
	ns, err := h.herald.Raise(ctx, tx, comment("m-ok", "ann", "author"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	n, err := adapters.NewPostgresNotificationRepository(h.pool).Get(ctx, ns[0].ID())
	require.NoError(t, err)
	assert.Equal(t, "author", n.Recipient())
}

func TestUnknownEventIsRejectedWhenRaised(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
		_, err := h.herald.Raise(ctx, tx, unknownEvent{})
		return err
	})
	require.ErrorIs(t, err, notification.ErrUnknownEvent)
}

type unknownEvent struct{}

func (unknownEvent) EventType() string { return "not_registered" }

// Announcement is a host event that goes to every device of a platform.
type Announcement struct {
	Text     string                `json:"text"`
	Platform notification.Platform `json:"platform"`
}

func (Announcement) EventType() string { return "announcement" }

func TestBroadcastReachesEveryDeviceInChunks(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Broadcast.ChunkSize = 700
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, func(a Announcement) ([]notification.Draft, error) {
		return []notification.Draft{{Type: "announcement", Broadcast: &notification.Audience{Platforms: []notification.Platform{a.Platform}},
			Content: notification.Content{Title: "News", Body: a.Text}}}, nil
	}))
	hd, err := herald.New(pool, client, rules, cfg)
	require.NoError(t, err)
	h := &harness{t: t, pool: pool, fake: fake, herald: hd}

	var tokens []*notification.DeviceToken
	now := time.Now()
	for i := range 5000 {
		platform := notification.PlatformAndroid
		if i%5 == 0 {
			platform = notification.PlatformIOS
		}
		tok, err := notification.NewDeviceToken(fmt.Sprintf("user-%d", i%1700), fmt.Sprintf("tok-%05d", i), platform, now)
		require.NoError(t, err)
		tokens = append(tokens, tok)
	}
	require.NoError(t, adapters.NewPostgresDeviceTokenRepository(pool).UpsertMany(context.Background(), tokens))
	h.run()

	ns := h.raise(true, Announcement{Text: "v2 is out", Platform: notification.PlatformAndroid})
	require.Len(t, ns, 1)
	assert.Empty(t, ns[0].Recipient())
	testutil.WaitDelivered(t, pool, ns[0].ID(), 60*time.Second)
	testutil.WaitIdle(t, pool, 10*time.Second)

	seen := map[string]int{}
	for _, r := range fake.Accepted() {
		seen[r.Token]++
	}
	assert.Len(t, seen, 4000, "every android device, no ios device")
	for tok, n := range seen {
		require.Equal(t, 1, n, tok)
	}
	var expanded int
	var finished bool
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT expanded, finished_at IS NOT NULL FROM herald_broadcasts WHERE notification_id = $1`, ns[0].ID()).Scan(&expanded, &finished))
	assert.Equal(t, 4000, expanded)
	assert.True(t, finished)
}
