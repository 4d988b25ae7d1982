package herald_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestSendAtHoldsThePushAndTheInboxEntryUntilThen(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok", notification.PlatformAndroid)
	h.run()
	d := draft("u", "your trial ends tomorrow")
	d.SendAt = time.Now().Add(2 * time.Second)
	n := h.notify(d)
	h.notify(draft("u", "now"))
	assert.Equal(t, d.SendAt, n.SendAt())

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Len(c, h.fake.AcceptedFor("tok"), 1, "the unscheduled one goes at once")
	}, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusPending: 1}, h.statuses(n), "expanded, held")
	assert.Equal(t, []string{"now"}, h.inboxTitles("u"), "not in the inbox before its time")
	unread, err := h.herald.Inbox().CountUnread(context.Background(), "u")
	require.NoError(t, err)
	assert.Equal(t, 1, unread)

	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	pushes := h.fake.AcceptedFor("tok")
	require.Len(t, pushes, 2)
	assert.Equal(t, "your trial ends tomorrow", pushes[1].Title)
	assert.False(t, pushes[1].At.Before(d.SendAt), "never early: accepted %s, send at %s", pushes[1].At, d.SendAt)
	assert.ElementsMatch(t, []string{"now", "your trial ends tomorrow"}, h.inboxTitles("u"))
}

func TestAnExpiredNotificationIsNeverPushed(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.Retry.MaxAttempts = 100 // the outage never fails it for good
	h := newDraftHarness(t, cfg)
	h.register("u", "tok-a", notification.PlatformAndroid)
	h.register("u", "tok-i", notification.PlatformIOS)
	// FCM is down for longer than the notification is worth.
	h.fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable})
	h.run()
	d := draft("u", "your ride is here")
	d.ExpiresAt = time.Now().Add(1500 * time.Millisecond)
	n := h.notify(d)
	later := draft("u", "receipt")
	later.ExpiresAt = time.Now().Add(time.Hour)
	kept := h.notify(later)

	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusExpired: 2}, 15*time.Second)
	h.fake.ClearFaults()
	h.waitStatuses(kept, map[notification.DeliveryStatus]int{notification.StatusSent: 2}, 15*time.Second)
	h.waitIdle(10 * time.Second)
	for _, p := range h.fake.Accepted() {
		assert.Equal(t, "receipt", p.Title, "the expired one never reached FCM")
	}
	ds, err := h.herald.ListDeliveriesByStatus(context.Background(), notification.StatusExpired, 10)
	require.NoError(t, err)
	require.Len(t, ds, 2, "operators see the expired deliveries")
	assert.Equal(t, "EXPIRED", ds[0].ErrorCode())
	counts, err := h.herald.CountDeliveries(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 2, counts[notification.StatusExpired])
	tl, err := h.herald.Timeline(context.Background(), n.ID())
	require.NoError(t, err)
	assert.Equal(t, d.ExpiresAt.Unix(), tl.Notification.ExpiresAt.Unix())
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusExpired: 2}, tl.Counts)
	// The inbox still holds it: expiry is about pushes.
	assert.ElementsMatch(t, []string{"your ride is here", "receipt"}, h.inboxTitles("u"))
}

func TestEachPushCarriesTheTimeToLiveThatRemainsBeforeExpiry(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok-a", notification.PlatformAndroid)
	h.register("u", "tok-i", notification.PlatformIOS)
	h.register("u", "tok-w", notification.PlatformWeb)
	h.run()
	d := draft("u", "flash sale")
	d.ExpiresAt = time.Now().Add(time.Hour)
	n := h.notify(d)
	short := draft("u", "short ttl")
	short.TTL = 10 * time.Minute
	short.ExpiresAt = time.Now().Add(time.Hour)
	s := h.notify(short)
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 3}, 10*time.Second)
	h.waitStatuses(s, map[notification.DeliveryStatus]int{notification.StatusSent: 3}, 10*time.Second)

	byTitle := func(token, title string) testutil.Received {
		for _, r := range h.fake.AcceptedFor(token) {
			if r.Title == title {
				return r
			}
		}
		t.Fatalf("no push %q to %s", title, token)
		return testutil.Received{}
	}
	android := byTitle("tok-a", "flash sale")
	secs, err := strconv.ParseFloat(strings.TrimSuffix(android.TTL, "s"), 64)
	require.NoError(t, err, android.TTL)
	assert.InDelta(t, 3600, secs, 30, "android.ttl is the time left")
	ios := byTitle("tok-i", "flash sale")
	exp, err := strconv.ParseInt(ios.APNsHeaders["apns-expiration"], 10, 64)
	require.NoError(t, err)
	assert.InDelta(t, d.ExpiresAt.Unix(), exp, 30, "apns-expiration is the expiry")
	web := byTitle("tok-w", "flash sale")
	webTTL, err := strconv.Atoi(web.WebpushHeaders["TTL"])
	require.NoError(t, err)
	assert.InDelta(t, 3600, webTTL, 30, "the web push TTL header is the time left")
	assert.Equal(t, "600s", byTitle("tok-a", "short ttl").TTL, "a shorter TTL still applies")
}
