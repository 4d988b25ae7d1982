package herald_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

func TestRichPlatformOptionsReachFCMAsEachPlatformReadsThem(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	h.register("u", "tok-a", notification.PlatformAndroid)
	h.register("u", "tok-i", notification.PlatformIOS)
	h.register("u", "tok-w", notification.PlatformWeb)
	h.run()
	// Two unread notifications already in the inbox; one read.
	h.notify(draft("u", "one"))
	h.notify(draft("u", "two"))
	read := h.notify(draft("u", "three"))
	require.NoError(t, h.herald.Inbox().MarkRead(context.Background(), "u", read.ID()))
	h.waitIdle(10 * time.Second)
	h.fake.ResetRecorded()

	badge := 7
	d := draft("u", "Your order shipped")
	d.Android = &notification.AndroidOptions{Priority: notification.AndroidPriorityHigh, ChannelID: "orders",
		ImageURL: "https://example.com/box.png", ClickAction: "OPEN_ORDER", Tag: "order-42", BadgeUnread: true}
	d.APNs = &notification.APNsOptions{Badge: &badge, BadgeUnread: true, Sound: "default", ThreadID: "orders",
		Category: "ORDER", MutableContent: true, InterruptionLevel: notification.InterruptionTimeSensitive}
	d.Web = &notification.WebOptions{Link: "https://shop.example.com/orders/42"}
	n := h.notify(d)
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 3}, 10*time.Second)

	android := h.fake.AcceptedFor("tok-a")[0]
	assert.Equal(t, "high", android.AndroidPriority)
	require.NotNil(t, android.AndroidNotification)
	assert.Equal(t, "orders", android.AndroidNotification.ChannelID)
	assert.Equal(t, "https://example.com/box.png", android.AndroidNotification.Image)
	assert.Equal(t, "OPEN_ORDER", android.AndroidNotification.ClickAction)
	assert.Equal(t, "order-42", android.AndroidNotification.Tag)
	require.NotNil(t, android.AndroidNotification.NotificationCount)
	assert.Equal(t, 3, *android.AndroidNotification.NotificationCount, "the unread count at push time: two, and this one")
	assert.Nil(t, android.APNsAps, "only the token's platform block is sent")

	ios := h.fake.AcceptedFor("tok-i")[0]
	aps := ios.APNsAps
	require.NotNil(t, aps)
	assert.EqualValues(t, 3, aps["badge"], "the unread count wins over the fixed badge")
	assert.Equal(t, "default", aps["sound"])
	assert.Equal(t, "orders", aps["thread-id"])
	assert.Equal(t, "ORDER", aps["category"])
	assert.EqualValues(t, 1, aps["mutable-content"])
	assert.Equal(t, "time-sensitive", aps["interruption-level"])

	web := h.fake.AcceptedFor("tok-w")[0]
	assert.Equal(t, "https://shop.example.com/orders/42", web.WebpushLink)

	// A fixed badge without the unread count.
	h.fake.ResetRecorded()
	fixed := draft("u", "fixed badge")
	fixed.APNs = &notification.APNsOptions{Badge: &badge}
	f := h.notify(fixed)
	h.waitStatuses(f, map[notification.DeliveryStatus]int{notification.StatusSent: 3}, 10*time.Second)
	assert.EqualValues(t, 7, h.fake.AcceptedFor("tok-i")[0].APNsAps["badge"])
}

func TestRichOptionsBeyondFCMsLimitsFailAtRaiseWithTypedErrors(t *testing.T) {
	t.Parallel()
	h := newDraftHarness(t, fastConfig())
	big := draft("u", strings.Repeat("x", 3900))
	big.Android = &notification.AndroidOptions{ImageURL: "https://example.com/" + strings.Repeat("i", 300)}
	cases := []struct {
		name  string
		draft func() notification.Draft
		want  error
	}{
		{"payload over 4096 bytes with the options", func() notification.Draft { return big }, notification.ErrPayloadTooLarge},
		{"image not https", func() notification.Draft {
			d := draft("u", "t")
			d.Android = &notification.AndroidOptions{ImageURL: "http://example.com/a.png"}
			return d
		}, notification.ErrInvalidURL},
		{"web link relative", func() notification.Draft {
			d := draft("u", "t")
			d.Web = &notification.WebOptions{Link: "/orders/42"}
			return d
		}, notification.ErrInvalidURL},
		{"unknown android priority", func() notification.Draft {
			d := draft("u", "t")
			d.Android = &notification.AndroidOptions{Priority: "urgent"}
			return d
		}, notification.ErrInvalidValue},
		{"unknown interruption level", func() notification.Draft {
			d := draft("u", "t")
			d.APNs = &notification.APNsOptions{InterruptionLevel: "loud"}
			return d
		}, notification.ErrInvalidValue},
		{"negative badge", func() notification.Draft {
			d := draft("u", "t")
			b := -1
			d.APNs = &notification.APNsOptions{Badge: &b}
			return d
		}, notification.ErrInvalidValue},
		{"collapse key over apns' 64 bytes", func() notification.Draft {
			return collapsing("u", "t", strings.Repeat("k", 65))
		}, notification.ErrTooLong},
		{"expires before it is sent", func() notification.Draft {
			d := draft("u", "t")
			d.SendAt = time.Now().Add(time.Hour)
			d.ExpiresAt = time.Now().Add(time.Minute)
			return d
		}, notification.ErrExpiresTooEarly},
		{"expires before it is raised", func() notification.Draft {
			d := draft("u", "t")
			d.ExpiresAt = time.Now().Add(-time.Minute)
			return d
		}, notification.ErrExpiresTooEarly},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			tx, err := h.pool.Begin(ctx)
			require.NoError(t, err)
			defer tx.Rollback(ctx) //nolint:errcheck // test
			_, err = h.herald.Raise(ctx, tx, Notify{Draft: c.draft()})
			assert.ErrorIs(t, err, c.want)
			_, err = tx.Exec(ctx, `SELECT 1`)
			assert.NoError(t, err, "the transaction stays usable")
		})
	}
}
