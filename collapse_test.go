package herald_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func collapsing(user, title, key string) notification.Draft {
	d := draft(user, title)
	d.CollapseKey = key
	return d
}

// TestACollapseKeyRaisedFiveTimesWhileFCMIsDownIsOnePushAfterRecovery:
// "Alice and 4 others commented" is one push, not five.
func TestACollapseKeyRaisedFiveTimesWhileFCMIsDownIsOnePushAfterRecovery(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.Retry.MaxAttempts = 100
	h := newDraftHarness(t, cfg)
	h.register("u", "tok-a", notification.PlatformAndroid)
	h.register("u", "tok-i", notification.PlatformIOS)
	h.register("v", "tok-v", notification.PlatformAndroid)
	h.fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable})
	h.run()

	var ns []*notification.Notification
	for i := range 5 {
		title := "Alice commented"
		if i > 0 {
			title = fmt.Sprintf("Alice and %d others commented", i)
		}
		ns = append(ns, h.notify(collapsing("u", title, "post-9-comments")))
		time.Sleep(50 * time.Millisecond) // the outage goes on between comments
	}
	// Another user's key of the same name is theirs alone.
	other := h.notify(collapsing("v", "Bob commented", "post-9-comments"))
	for _, n := range ns[:4] {
		h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSuperseded: 2}, 15*time.Second)
	}
	h.fake.ClearFaults()
	h.waitStatuses(ns[4], map[notification.DeliveryStatus]int{notification.StatusSent: 2}, 15*time.Second)
	h.waitStatuses(other, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 15*time.Second)
	h.waitIdle(10 * time.Second)

	for _, tok := range []string{"tok-a", "tok-i"} {
		pushes := h.fake.AcceptedFor(tok)
		require.Len(t, pushes, 1, "one push to %s", tok)
		assert.Equal(t, "Alice and 4 others commented", pushes[0].Title)
	}
	assert.Equal(t, "post-9-comments", h.fake.AcceptedFor("tok-a")[0].CollapseKey, "FCM's collapse_key")
	assert.Equal(t, "post-9-comments", h.fake.AcceptedFor("tok-i")[0].APNsHeaders["apns-collapse-id"])
	for _, n := range ns[:4] {
		for _, d := range mustDeliveries(t, h, n) {
			assert.Equal(t, "SUPERSEDED", d.ErrorCode())
			assert.Zero(t, d.Attempts()+boolInt(d.MessageName() != ""), "never pushed")
		}
	}
	// The inbox keeps the newest of the key only.
	assert.Equal(t, []string{"Alice and 4 others commented"}, h.inboxTitles("u"))
	unread, err := h.herald.Inbox().CountUnread(context.Background(), "u")
	require.NoError(t, err)
	assert.Equal(t, 1, unread)
	counts, err := h.herald.CountDeliveries(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 8, counts[notification.StatusSuperseded], "operators see what was superseded")
	tl, err := h.herald.Timeline(context.Background(), ns[0].ID())
	require.NoError(t, err)
	assert.Equal(t, "post-9-comments", tl.Notification.CollapseKey)
	assert.False(t, tl.Notification.SupersededAt.IsZero(), "the timeline says when it was replaced")
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusSuperseded: 2}, tl.Counts)
	page, err := h.herald.QueryDeliveries(context.Background(), herald.DeliveryQuery{Status: notification.StatusSuperseded, Recipient: "u"})
	require.NoError(t, err)
	assert.Len(t, page.Deliveries, 8)
}

// TestAnOlderNotificationExpandedAfterANewerOneIsSupersededToo: the relay
// expands in commit order, which need not be the order of creation (a
// transaction that raised first may commit last); the older one is then
// superseded when it is expanded, and never pushed.
func TestAnOlderNotificationExpandedAfterANewerOneIsSupersededToo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok", notification.PlatformAndroid)
	slow, err := h.pool.Begin(ctx)
	require.NoError(t, err)
	defer slow.Rollback(ctx) //nolint:errcheck // no-op after commit
	raised, err := h.herald.Raise(ctx, slow, Notify{Draft: collapsing("u", "older", "k")})
	require.NoError(t, err)
	old := raised[0]
	newer := h.notify(collapsing("u", "newer", "k"))
	require.NoError(t, slow.Commit(ctx)) // created before, committed after
	require.True(t, old.CreatedAt().Before(newer.CreatedAt()))
	h.run()
	h.waitStatuses(newer, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	h.waitStatuses(old, map[notification.DeliveryStatus]int{notification.StatusSuperseded: 1}, 10*time.Second)
	h.waitIdle(10 * time.Second)
	pushes := h.fake.AcceptedFor("tok")
	require.Len(t, pushes, 1)
	assert.Equal(t, "newer", pushes[0].Title)
	assert.Equal(t, []string{"newer"}, h.inboxTitles("u"))
}

// TestANotificationRaisedLateInALongTransactionIsNewerThanThoseRaisedMeanwhile:
// a notification is as new as its raise, not as the host's transaction
// around it. A host transaction began, another raised and committed "3 new
// comments", then the first raised "4 new comments": the latter is the
// newest of its collapse key, pushed and at the top of the inbox. (Stamped
// with now(), the time the transaction began, it would have been the
// older, superseded and never pushed.)
func TestANotificationRaisedLateInALongTransactionIsNewerThanThoseRaisedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok", notification.PlatformAndroid)
	long, err := h.pool.Begin(ctx)
	require.NoError(t, err)
	defer long.Rollback(ctx) //nolint:errcheck // no-op after commit
	// The host's own work, then other transactions raise meanwhile.
	_, err = long.Exec(ctx, `SELECT 1`)
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond)
	meanwhile := h.notify(collapsing("u", "3 new comments", "comments"))
	time.Sleep(10 * time.Millisecond)
	raised, err := h.herald.Raise(ctx, long, Notify{Draft: collapsing("u", "4 new comments", "comments")})
	require.NoError(t, err)
	require.NoError(t, long.Commit(ctx))
	late := raised[0]
	h.run()
	h.waitStatuses(late, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	h.waitStatuses(meanwhile, map[notification.DeliveryStatus]int{notification.StatusSuperseded: 1}, 10*time.Second)
	assert.Equal(t, []string{"4 new comments"}, h.inboxTitles("u"))
}

func mustDeliveries(t *testing.T, h *harness, n *notification.Notification) []*notification.Delivery {
	t.Helper()
	ds, err := h.herald.ListDeliveries(context.Background(), n.ID())
	require.NoError(t, err)
	return ds
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestASupersededNotificationHeldForLaterClosesAtOnce: the deliveries of an
// older notification held far ahead (a SendAt tomorrow) end superseded when
// the newer one is expanded, rather than stay open until tomorrow.
func TestASupersededNotificationHeldForLaterClosesAtOnce(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok", notification.PlatformAndroid)
	h.run()
	later := collapsing("u", "tomorrow's digest", "digest")
	later.SendAt = time.Now().Add(24 * time.Hour)
	old := h.notify(later)
	h.waitStatuses(old, map[notification.DeliveryStatus]int{notification.StatusPending: 1}, 10*time.Second)
	newer := h.notify(collapsing("u", "today's digest", "digest"))
	h.waitStatuses(newer, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	h.waitStatuses(old, map[notification.DeliveryStatus]int{notification.StatusSuperseded: 1}, 10*time.Second)
	h.waitIdle(10 * time.Second) // nothing left open until tomorrow
	assert.Len(t, h.fake.AcceptedFor("tok"), 1)
}
