package herald_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// TestAnOperatorFindsWhyAPushFailedRetriesItAndSeesEveryAttempt: "why did
// the author get nothing on one phone?" A notification to three devices:
// one FCM rejects the message for, one whose token is dead, one delivered.
// The operator finds the deliveries by recipient, by status and by FCM
// code, pages through them with a cursor, reads the timeline (every
// delivery by its token's hash, every attempt with its code and time),
// retries the failure by filter (once: a second retry finds nothing), and
// the timeline then shows both attempts. The status counts the failures
// of the last hour by code.
func TestAnOperatorFindsWhyAPushFailedRetriesItAndSeesEveryAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	require.NoError(t, h.herald.Tokens().Register(ctx, "author", "author-phone", notification.PlatformAndroid))
	require.NoError(t, h.herald.Tokens().Register(ctx, "author", "author-tablet", notification.PlatformIOS))
	require.NoError(t, h.herald.Tokens().Register(ctx, "author", "author-old-phone", notification.PlatformAndroid))
	h.fake.FailToken("author-phone", testutil.Fault{Code: testutil.FaultInvalidMessage})
	h.fake.FailToken("author-old-phone", testutil.Fault{Code: testutil.FaultUnregistered})
	h.run()
	n := h.raise(true, comment("m1", "ann", "author"))[0]
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusFailed: 1, notification.StatusSent: 1,
		notification.StatusTokenPruned: 1}, 10*time.Second)
	phone, tablet, old := herald.TokenHash("author-phone"), herald.TokenHash("author-tablet"), herald.TokenHash("author-old-phone")

	page, err := h.herald.QueryDeliveries(ctx, herald.DeliveryQuery{Recipient: "author"})
	require.NoError(t, err)
	require.Len(t, page.Deliveries, 3)
	assert.Empty(t, page.Next)
	for _, d := range page.Deliveries {
		assert.Equal(t, n.ID(), d.NotificationID)
		assert.Equal(t, "author", d.Recipient)
		assert.Equal(t, notification.CommentCreatedType, d.Type)
		assert.Contains(t, []string{phone, tablet, old}, d.TokenHash, "tokens only as their hash")
	}
	failed, err := h.herald.QueryDeliveries(ctx, herald.DeliveryQuery{Status: notification.StatusFailed})
	require.NoError(t, err)
	require.Len(t, failed.Deliveries, 1)
	assert.Equal(t, phone, failed.Deliveries[0].TokenHash)
	assert.Equal(t, "INVALID_ARGUMENT", failed.Deliveries[0].Code)
	dead, err := h.herald.QueryDeliveries(ctx, herald.DeliveryQuery{Code: "UNREGISTERED", Since: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	require.Len(t, dead.Deliveries, 1)
	assert.Equal(t, old, dead.Deliveries[0].TokenHash)
	none, err := h.herald.QueryDeliveries(ctx, herald.DeliveryQuery{Recipient: "author", Since: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Empty(t, none.Deliveries)

	// Pages of one, newest first, until Next is empty.
	var ids []int64
	q := herald.DeliveryQuery{NotificationID: n.ID(), Limit: 1}
	for {
		p, err := h.herald.QueryDeliveries(ctx, q)
		require.NoError(t, err)
		for _, d := range p.Deliveries {
			ids = append(ids, d.ID)
		}
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	require.Len(t, ids, 3)
	assert.Greater(t, ids[0], ids[1])
	assert.Greater(t, ids[1], ids[2])
	_, err = h.herald.QueryDeliveries(ctx, herald.DeliveryQuery{Cursor: "not-a-cursor"})
	assert.ErrorIs(t, err, herald.ErrInvalidCursor)
	_, err = h.herald.QueryDeliveries(ctx, herald.DeliveryQuery{Status: "faild"})
	assert.ErrorContains(t, err, `unknown status "faild"`)

	tl, err := h.herald.Timeline(ctx, n.ID())
	require.NoError(t, err)
	assert.Equal(t, "author", tl.Notification.Recipient)
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusFailed: 1, notification.StatusSent: 1,
		notification.StatusTokenPruned: 1}, tl.Counts)
	assert.False(t, tl.Truncated)
	assert.Nil(t, tl.Broadcast)
	attempts := func(tl herald.Timeline) map[string][]herald.Attempt {
		byToken := map[string][]herald.Attempt{}
		for _, d := range tl.Deliveries {
			for _, a := range d.Attempts {
				assert.WithinDuration(t, time.Now(), a.At, time.Minute)
			}
			byToken[d.TokenHash] = d.Attempts
		}
		return byToken
	}
	got := attempts(tl)
	require.Len(t, got, 3)
	require.Len(t, got[phone], 1)
	assert.Equal(t, notification.StatusFailed, got[phone][0].Outcome)
	assert.Equal(t, "INVALID_ARGUMENT", got[phone][0].Code)
	assert.Equal(t, 1, got[phone][0].Number)
	require.Len(t, got[old], 1)
	assert.Equal(t, notification.StatusTokenPruned, got[old][0].Outcome)
	assert.Equal(t, "UNREGISTERED", got[old][0].Code)
	require.Len(t, got[tablet], 1)
	assert.Equal(t, notification.StatusSent, got[tablet][0].Outcome)

	status, err := h.herald.Status(ctx)
	require.NoError(t, err)
	assert.ElementsMatch(t, []herald.CodeCount{{Code: "INVALID_ARGUMENT", Count: 1}, {Code: "UNREGISTERED", Count: 1}},
		status.FailedLastHour)

	_, err = h.herald.RetryFailedWhere(ctx, herald.DeliveryQuery{})
	assert.ErrorContains(t, err, "RetryAllFailed", "a query without filters retries nothing")
	_, err = h.herald.RetryFailedWhere(ctx, herald.DeliveryQuery{Status: notification.StatusSent, Recipient: "author"})
	assert.Error(t, err, "only failed deliveries are retried")
	none2, err := h.herald.RetryFailedWhere(ctx, herald.DeliveryQuery{Code: "UNAVAILABLE"})
	require.NoError(t, err)
	assert.Zero(t, none2)
	h.fake.ClearFaults()
	retried, err := h.herald.RetryFailedWhere(ctx, herald.DeliveryQuery{Recipient: "author", Code: "INVALID_ARGUMENT"})
	require.NoError(t, err)
	assert.Equal(t, 1, retried)
	again, err := h.herald.RetryFailedWhere(ctx, herald.DeliveryQuery{Recipient: "author", Code: "INVALID_ARGUMENT"})
	require.NoError(t, err)
	assert.Zero(t, again, "idempotent: the delivery is no longer failed")
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 2, notification.StatusTokenPruned: 1}, 10*time.Second)
	assert.Len(t, h.fake.AcceptedFor("author-phone"), 1)

	tl, err = h.herald.Timeline(ctx, n.ID())
	require.NoError(t, err)
	got = attempts(tl)
	require.Len(t, got[phone], 2, "the failed attempt, then the retried one")
	assert.Equal(t, notification.StatusFailed, got[phone][0].Outcome)
	assert.Equal(t, notification.StatusSent, got[phone][1].Outcome)
	assert.False(t, got[phone][1].At.Before(got[phone][0].At))

	_, err = h.herald.Timeline(ctx, uuid.New())
	assert.ErrorIs(t, err, notification.ErrNotFound)
}

// TestCancellingANotificationStopsEveryPushNotYetMade: an operator cancels
// a notification whose relay has not expanded it yet, with one delivery
// pending and one claimed by a sender that died. The pending one is
// cancelled at once; the relay creates no delivery for the devices not yet
// expanded; the claimed one, taken over when its lease ends, is cancelled
// rather than pushed. Nothing reaches FCM. Cancelling again cancels nothing;
// an unknown notification is not found.
func TestCancellingANotificationStopsEveryPushNotYetMade(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 3) // author-device-0000..0002
	n := h.raise(true, comment("m1", "ann", "author"))[0]
	_, err := h.pool.Exec(ctx, `
		INSERT INTO herald_deliveries (notification_id, token, status, due_at, claim_id, attempts, created_at, updated_at) VALUES
			($1, 'author-device-0000', 'pending', now(), NULL, 0, now(), now()),
			($1, 'author-device-0001', 'claimed', now() - interval '1 second', gen_random_uuid(), 0, now(), now())`, n.ID())
	require.NoError(t, err)

	cancelled, err := h.herald.CancelNotification(ctx, n.ID())
	require.NoError(t, err)
	assert.Equal(t, 1, cancelled, "the pending delivery; the claimed one is in flight")
	cancelled, err = h.herald.CancelNotification(ctx, n.ID())
	require.NoError(t, err)
	assert.Zero(t, cancelled, "idempotent")
	_, err = h.herald.CancelNotification(ctx, uuid.New())
	assert.ErrorIs(t, err, notification.ErrNotFound)

	h.run()
	testutil.WaitIdle(t, h.pool, 10*time.Second)
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusCancelled: 2}, h.statuses(n),
		"no delivery for the device not yet expanded")
	assert.Empty(t, h.fake.Accepted())
	page, err := h.herald.QueryDeliveries(ctx, herald.DeliveryQuery{Status: notification.StatusCancelled})
	require.NoError(t, err)
	require.Len(t, page.Deliveries, 2)
	for _, d := range page.Deliveries {
		assert.Equal(t, "CANCELLED", d.Code)
	}
	tl, err := h.herald.Timeline(ctx, n.ID())
	require.NoError(t, err)
	assert.False(t, tl.Notification.CancelledAt.IsZero())
}

// TestStatusShowsTheWholeDeploymentAtAGlance: the status, read by a
// process that does not send, counts deliveries by status, what is due and
// for how long, the relay's backlog and lag, dead letters and open
// broadcasts, and encodes to JSON with readable durations.
func TestStatusShowsTheWholeDeploymentAtAGlance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	web, err := herald.New(h.pool, nil, notification.NewRules(), fastConfig())
	require.NoError(t, err)

	s, err := web.Status(ctx)
	require.NoError(t, err)
	assert.Empty(t, s.Deliveries)
	assert.Zero(t, s.DueNow)
	assert.Zero(t, s.Relay.Messages)
	assert.Empty(t, s.Breaker, "a Herald without FCM has no breaker")

	h.registerTokens("author", 2)
	n := h.raise(true, comment("m1", "ann", "author"))[0]
	for _, sql := range []string{
		`INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at) VALUES
			($1, 'author-device-0000', 'pending', now() - interval '90 seconds', now(), now()),
			($1, 'author-device-0001', 'retry_scheduled', now() + interval '1 hour', now(), now())`,
		`INSERT INTO herald_broadcasts (notification_id, expanded, created_at) VALUES ($1, 1234, now() - interval '1 minute')`,
	} {
		_, err = h.pool.Exec(ctx, sql, n.ID())
		require.NoError(t, err)
	}
	for _, sql := range []string{
		`UPDATE watermill_herald_outbox SET created_at = created_at - interval '5 minutes'`,
		`INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason) VALUES ('herald_outbox', 'x', '', 'r')`,
	} {
		_, err = h.pool.Exec(ctx, sql)
		require.NoError(t, err)
	}

	s, err = web.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, []herald.StatusCount{
		{Status: notification.StatusPending, Count: 1},
		{Status: notification.StatusRetryScheduled, Count: 1},
	}, s.Deliveries)
	assert.Equal(t, int64(1), s.DueNow)
	assert.InDelta(t, 90*time.Second, s.OldestDueAge, float64(10*time.Second))
	assert.Equal(t, int64(1), s.Relay.Messages, "the raised event waits for the relay")
	assert.InDelta(t, 5*time.Minute, s.Relay.OldestAge, float64(30*time.Second))
	assert.Equal(t, int64(1), s.DeadLetters)
	require.Len(t, s.Broadcasts, 1)
	assert.Equal(t, int64(1234), s.Broadcasts[0].Expanded)
	assert.Equal(t, n.ID(), s.Broadcasts[0].NotificationID)

	h.run()
	require.Eventually(t, func() bool {
		s, err := h.herald.Status(ctx)
		return err == nil && s.Breaker == "closed" && s.Relay.Messages == 0
	}, 10*time.Second, 20*time.Millisecond, "a sending process reports its breaker")

	raw, err := json.Marshal(s)
	require.NoError(t, err)
	var j map[string]any
	require.NoError(t, json.Unmarshal(raw, &j))
	assert.Regexp(t, `^1m3\d(\.\d+)?s$`, j["oldest_due_age"])
	assert.Regexp(t, `^5m\d+(\.\d+)?s$`, j["relay"].(map[string]any)["lag"])
	assert.Equal(t, []any{
		map[string]any{"status": "pending", "count": float64(1)},
		map[string]any{"status": "retry_scheduled", "count": float64(1)},
	}, j["deliveries"])
	assert.Equal(t, []any{}, j["failed_last_hour"])
}

// TestCancellingABroadcastStopsItsExpansion: a broadcast cancelled half
// expanded creates no more deliveries, and those it created are
// cancelled: no device gets it.
func TestCancellingABroadcastStopsItsExpansion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, func(a Announcement) ([]notification.Draft, error) {
		return []notification.Draft{{Type: "announcement", Broadcast: &notification.Audience{},
			Content: notification.Content{Title: "News", Body: a.Text}}}, nil
	}))
	cfg := fastConfig()
	cfg.Broadcast.ChunkSize = 10
	hd, err := herald.New(pool, client, rules, cfg)
	require.NoError(t, err)
	h := &harness{t: t, pool: pool, fake: fake, herald: hd}
	h.registerTokens("crowd", 50)
	n := h.raise(true, Announcement{Text: "v2 is out"})[0]
	// Half way: the relay recorded the broadcast and the expander created
	// the first chunk.
	for _, sql := range []string{
		`INSERT INTO herald_broadcasts (notification_id, last_token, expanded, created_at)
			VALUES ($1, 'crowd-device-0009', 10, now())`,
		`INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
			SELECT $1, token, 'pending', now(), now(), now() FROM herald_device_tokens WHERE token <= 'crowd-device-0009'`,
	} {
		_, err := pool.Exec(ctx, sql, n.ID())
		require.NoError(t, err)
	}

	cancelled, err := hd.CancelNotification(ctx, n.ID())
	require.NoError(t, err)
	assert.Equal(t, 10, cancelled)
	h.run()
	testutil.WaitIdle(t, pool, 10*time.Second)
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusCancelled: 10}, h.statuses(n))
	assert.Empty(t, fake.Accepted())
	tl, err := hd.Timeline(ctx, n.ID())
	require.NoError(t, err)
	require.NotNil(t, tl.Broadcast)
	assert.False(t, tl.Broadcast.FinishedAt.IsZero(), "the expansion stopped")
	assert.Equal(t, int64(10), tl.Broadcast.Expanded)
	assert.True(t, tl.Notification.Broadcast)
}
