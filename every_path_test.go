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

// TestAnOperatorRetryOfAnExpiredNotificationPushesNothing: a failed
// delivery retried by an operator after its notification expired ends
// expired; one of a superseded notification ends superseded.
func TestAnOperatorRetryNeverPushesAnExpiredOrSupersededNotification(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok", notification.PlatformAndroid)
	h.fake.FailAll(testutil.Fault{Code: testutil.FaultInvalidMessage})
	h.run()
	// Its expiry is an hour ahead, so that it fails first however slow
	// the machine; the hour is then made to pass in the database.
	d := draft("u", "flash sale")
	d.ExpiresAt = time.Now().Add(time.Hour)
	expiring := h.notify(d)
	old := h.notify(collapsing("u", "old", "k"))
	h.waitStatuses(expiring, map[notification.DeliveryStatus]int{notification.StatusFailed: 1}, 10*time.Second)
	h.waitStatuses(old, map[notification.DeliveryStatus]int{notification.StatusFailed: 1}, 10*time.Second)
	h.fake.ClearFaults()
	newer := h.notify(collapsing("u", "new", "k"))
	h.waitStatuses(newer, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	_, err := h.pool.Exec(context.Background(), `UPDATE herald_notifications
		SET expires_at = now() - interval '1 second' WHERE id = $1`, expiring.ID())
	require.NoError(t, err)

	n, err := h.herald.RetryAllFailed(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	h.waitStatuses(expiring, map[notification.DeliveryStatus]int{notification.StatusExpired: 1}, 10*time.Second)
	h.waitStatuses(old, map[notification.DeliveryStatus]int{notification.StatusSuperseded: 1}, 10*time.Second)
	pushes := h.fake.AcceptedFor("tok")
	require.Len(t, pushes, 1)
	assert.Equal(t, "new", pushes[0].Title)
}

// TestABroadcastHonoursSendAtAndItsCollapseKey: a broadcast is held until
// its send time, carries its collapse key, and a newer broadcast with the
// same key supersedes what the older one has not pushed.
func TestABroadcastHonoursSendAtAndItsCollapseKey(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	h.register("a", "tok-a", notification.PlatformAndroid)
	h.register("b", "tok-b", notification.PlatformIOS)
	h.run()
	b := notification.Draft{Broadcast: &notification.Audience{}, Type: "news", CollapseKey: "headline",
		Content: notification.Content{Title: "old headline"}, SendAt: time.Now().Add(time.Hour)}
	old := h.notify(b)
	h.waitStatuses(old, map[notification.DeliveryStatus]int{notification.StatusPending: 2}, 10*time.Second)
	b.Content.Title, b.SendAt = "new headline", time.Now().Add(1500*time.Millisecond)
	newer := h.notify(b)
	h.waitStatuses(newer, map[notification.DeliveryStatus]int{notification.StatusSent: 2}, 10*time.Second)
	for _, tok := range []string{"tok-a", "tok-b"} {
		pushes := h.fake.AcceptedFor(tok)
		require.Len(t, pushes, 1)
		assert.Equal(t, "new headline", pushes[0].Title)
		assert.False(t, pushes[0].At.Before(b.SendAt), "not before its send time")
	}
	assert.Equal(t, "headline", h.fake.AcceptedFor("tok-a")[0].CollapseKey)
	assert.Equal(t, "headline", h.fake.AcceptedFor("tok-b")[0].APNsHeaders["apns-collapse-id"])
	// The older broadcast's deliveries close when they come due (in an
	// hour); they are never pushed, and the notification says why.
	tl, err := h.herald.Timeline(context.Background(), old.ID())
	require.NoError(t, err)
	assert.False(t, tl.Notification.SupersededAt.IsZero())
}

// TestAReplayedDeadLetterHonoursSendAtAndCollapse: events a relay did not
// know (raised by a newer version of the application) wait in the dead
// letters; replayed once the rule is deployed, their notifications keep
// their send time and collapse key.
func TestAReplayedDeadLetterHonoursSendAtAndCollapse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	newHerald := func(withNotify bool) *herald.Herald {
		client, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
		require.NoError(t, err)
		rules := notification.NewRules()
		require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
		if withNotify {
			require.NoError(t, notification.On(rules, func(e Notify) ([]notification.Draft, error) {
				return []notification.Draft{e.Draft}, nil
			}))
		}
		h, err := herald.New(pool, client, rules, fastConfig())
		require.NoError(t, err)
		return h
	}
	run := func(h *herald.Herald) (stop func()) {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); assert.NoError(t, h.Run(runCtx)) }()
		return func() { cancel(); <-done }
	}
	old := newHerald(false)
	require.NoError(t, old.Tokens().Register(ctx, "u", "tok", notification.PlatformAndroid))
	stopOld := run(old)

	// The newer application raises with its own rules.
	newer := newHerald(true)
	sendAt := time.Now().Add(2 * time.Second)
	for _, title := range []string{"older", "newer"} {
		d := collapsing("u", title, "k")
		d.SendAt = sendAt
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		_, err = newer.Raise(ctx, tx, Notify{Draft: d})
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
	}
	require.Eventually(t, func() bool {
		dls, err := old.DeadLetters(ctx, true, 10)
		return err == nil && len(dls) == 2
	}, 10*time.Second, 20*time.Millisecond)
	stopOld()

	stopNewer := run(newer)
	defer stopNewer()
	n, err := newer.ReplayAllDeadLetters(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Len(c, fake.AcceptedFor("tok"), 1)
	}, 15*time.Second, 20*time.Millisecond)
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, newer.WaitIdle(waitCtx))
	pushes := fake.AcceptedFor("tok")
	require.Len(t, pushes, 1, "the older one is superseded")
	assert.Equal(t, "newer", pushes[0].Title)
	assert.False(t, pushes[0].At.Before(sendAt), "not before its send time")
	assert.Equal(t, "k", pushes[0].CollapseKey)
	counts, err := newer.CountDeliveries(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, counts[notification.StatusSuperseded])
}
