package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
	d := draft("u", "flash sale")
	d.ExpiresAt = time.Now().Add(1500 * time.Millisecond)
	expiring := h.notify(d)
	old := h.notify(collapsing("u", "old", "k"))
	h.waitStatuses(expiring, map[notification.DeliveryStatus]int{notification.StatusFailed: 1}, 10*time.Second)
	h.waitStatuses(old, map[notification.DeliveryStatus]int{notification.StatusFailed: 1}, 10*time.Second)
	h.fake.ClearFaults()
	newer := h.notify(collapsing("u", "new", "k"))
	h.waitStatuses(newer, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	time.Sleep(time.Until(d.ExpiresAt))

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
