package notification_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

func TestThePushTimeToLiveIsWhatRemainsBeforeExpiry(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		ttl       time.Duration
		expiresAt time.Time
		want      time.Duration
	}{
		{"neither: the provider's default", 0, time.Time{}, 0},
		{"a ttl alone", time.Hour, time.Time{}, time.Hour},
		{"an expiry alone", 0, now.Add(90 * time.Minute), 90 * time.Minute},
		{"the shorter of both", time.Hour, now.Add(10 * time.Minute), 10 * time.Minute},
		{"a ttl shorter than the expiry", 5 * time.Minute, now.Add(time.Hour), 5 * time.Minute},
		{"a far expiry is capped at 28 days", 0, now.Add(60 * 24 * time.Hour), notification.MaxTTL},
		{"under a second left: one second", 0, now.Add(300 * time.Millisecond), time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := notification.Message{Content: notification.Content{TTL: c.ttl},
				PushOptions: notification.PushOptions{ExpiresAt: c.expiresAt}}
			assert.Equal(t, c.want, m.TTLAt(now))
		})
	}
	m := notification.Message{PushOptions: notification.PushOptions{ExpiresAt: now}}
	assert.True(t, m.Expired(now))
	assert.False(t, m.Expired(now.Add(-time.Nanosecond)))
	assert.False(t, notification.Message{}.Expired(now), "no expiry never expires")
}

func TestANotificationKeepsItsDraftsDeliverySettings(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	badge := 2
	d := notification.Draft{Recipient: "u", Type: "t", Content: notification.Content{Title: "x"},
		IdempotencyKey: "k", SendAt: created.Add(time.Hour), ExpiresAt: created.Add(2 * time.Hour), CollapseKey: "c",
		APNs: &notification.APNsOptions{Badge: &badge}}
	n, err := notification.NewNotification(uuid.New(), d, created)
	require.NoError(t, err)
	badge = 9
	assert.Equal(t, "k", n.IdempotencyKey())
	assert.Equal(t, created.Add(notification.DefaultIdempotencyWindow), n.IdempotentUntil())
	assert.Equal(t, d.SendAt, n.SendAt())
	assert.Equal(t, d.ExpiresAt, n.ExpiresAt())
	assert.Equal(t, "c", n.CollapseKey())
	assert.Equal(t, 2, *n.PushOptions().APNs.Badge, "the options are copied")

	past := d
	past.SendAt = created.Add(-time.Minute)
	p, err := notification.NewNotification(uuid.New(), past, created)
	require.NoError(t, err)
	assert.Equal(t, past.SendAt, p.SendAt(),
		"kept: the database, not the raising server's clock, says whether it has passed (it then sends at once)")
	past.SendAt = time.Date(0, 12, 31, 0, 0, 0, 0, time.UTC)
	p, err = notification.NewNotification(uuid.New(), past, created)
	require.NoError(t, err)
	assert.True(t, p.SendAt().IsZero(), "one before the year 1 is dropped: it sends at once")
}

// TestARaisingServersClockDecidesNothingANotificationIsJudgedBy: the time
// a notification is made with is one server's, possibly minutes off the
// others'. An expiry before it is not refused then; CheckExpiry judges it
// against the clock it is given (the database's), and the creation time
// the database stamps moves the idempotency window with it.
func TestARaisingServersClockDecidesNothingANotificationIsJudgedBy(t *testing.T) {
	t.Parallel()
	serverNow := time.Date(2026, 11, 30, 12, 10, 0, 0, time.UTC) // 10 minutes ahead
	databaseNow := serverNow.Add(-10 * time.Minute)
	d := notification.Draft{Recipient: "u", Type: "t", Content: notification.Content{Title: "x"},
		IdempotencyKey: "k", IdempotencyWindow: 5 * time.Minute, ExpiresAt: databaseNow.Add(3 * time.Minute)}
	n, err := notification.NewNotification(uuid.New(), d, serverNow)
	require.NoError(t, err, "an expiry before the raising server's time is not its call")
	assert.NoError(t, n.CheckExpiry(databaseNow))
	err = n.CheckExpiry(databaseNow.Add(3 * time.Minute))
	assert.ErrorIs(t, err, notification.ErrExpiresTooEarly)
	var fe *notification.FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "expires_at", fe.Field)
	d.ExpiresAt = time.Time{}
	never, err := notification.NewNotification(uuid.New(), d, serverNow)
	require.NoError(t, err)
	assert.NoError(t, never.CheckExpiry(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)), "no expiry never expires")

	assert.Equal(t, 5*time.Minute, n.IdempotencyWindow())
	n.StampCreatedAt(databaseNow)
	assert.Equal(t, databaseNow, n.CreatedAt())
	assert.Equal(t, databaseNow.Add(5*time.Minute), n.IdempotentUntil(), "the window runs from the stored creation")
}

// Postgres stores times up to the year 294276 and Go's JSON up to 9999: a
// send time or expiry beyond that would fail only at the database, after
// Raise began writing, and lose the host's transaction. Validation refuses
// it first.
func TestASendTimeOrExpiryPastTheYear9999FailsValidation(t *testing.T) {
	t.Parallel()
	far := time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)
	base := notification.Draft{Recipient: "u", Type: "t", Content: notification.Content{Title: "hi"}}
	for name, d := range map[string]notification.Draft{
		"send_at":    func() notification.Draft { d := base; d.SendAt = far; return d }(),
		"expires_at": func() notification.Draft { d := base; d.ExpiresAt = far; return d }(),
	} {
		_, err := notification.NewNotification(uuid.New(), d, time.Now())
		require.ErrorIs(t, err, notification.ErrInvalidValue, name)
		var fe *notification.FieldError
		require.ErrorAs(t, err, &fe)
		assert.Equal(t, name, fe.Field)
	}
	ok := base
	ok.SendAt = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	ok.ExpiresAt = ok.SendAt.Add(time.Hour)
	_, err := notification.NewNotification(uuid.New(), ok, time.Now())
	assert.NoError(t, err, "the year 9999 is still accepted")
}
