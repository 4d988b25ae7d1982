package notification_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func validDraft() notification.Draft {
	return notification.Draft{
		Recipient: "user-1",
		Type:      "comment_created",
		Content:   notification.Content{Title: "Hello", Body: "World", Data: map[string]string{"course_id": "c1"}},
	}
}

func TestNewNotificationValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*notification.Draft)
		want   error
	}{
		{"valid", func(*notification.Draft) {}, nil},
		{"data only is valid", func(d *notification.Draft) { d.Title, d.Body = "", "" }, nil},
		{"missing recipient", func(d *notification.Draft) { d.Recipient = "" }, notification.ErrRequired},
		{"missing type", func(d *notification.Draft) { d.Type = "" }, notification.ErrRequired},
		{"no content at all", func(d *notification.Draft) { d.Title, d.Body, d.Data = "", "", nil }, notification.ErrRequired},
		{"recipient too long", func(d *notification.Draft) { d.Recipient = strings.Repeat("u", 256) }, notification.ErrTooLong},
		{"invalid utf-8 title", func(d *notification.Draft) { d.Title = "bad \xff" }, notification.ErrInvalidUTF8},
		{"nul byte in body", func(d *notification.Draft) { d.Body = "a\x00b" }, notification.ErrInvalidUTF8},
		{"invalid utf-8 data value", func(d *notification.Draft) { d.Data["k"] = "\xc3\x28" }, notification.ErrInvalidUTF8},
		{"reserved key from", func(d *notification.Draft) { d.Data["from"] = "x" }, notification.ErrReservedDataKey},
		{"reserved key message_type", func(d *notification.Draft) { d.Data["message_type"] = "x" }, notification.ErrReservedDataKey},
		{"reserved prefix google", func(d *notification.Draft) { d.Data["google.sent_time"] = "x" }, notification.ErrReservedDataKey},
		{"reserved prefix gcm", func(d *notification.Draft) { d.Data["gcm.notification"] = "x" }, notification.ErrReservedDataKey},
		{"empty data key", func(d *notification.Draft) { d.Data[""] = "x" }, notification.ErrRequired},
		{"negative ttl", func(d *notification.Draft) { d.TTL = -time.Second }, notification.ErrTTLOutOfRange},
		{"ttl over 28 days", func(d *notification.Draft) { d.TTL = notification.MaxTTL + time.Second }, notification.ErrTTLOutOfRange},
		{"payload over 4096 bytes", func(d *notification.Draft) { d.Body = strings.Repeat("x", 4096) }, notification.ErrPayloadTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := validDraft()
			tt.modify(&d)
			n, err := notification.NewNotification(uuid.New(), d, now)
			if tt.want == nil {
				require.NoError(t, err)
				assert.Equal(t, d.Recipient, n.Recipient())
				assert.Equal(t, d.Title, n.Content().Title)
				return
			}
			require.ErrorIs(t, err, tt.want)
			assert.Nil(t, n)
		})
	}
}

func TestNewNotificationReportsEveryProblem(t *testing.T) {
	t.Parallel()
	d := validDraft()
	d.Recipient, d.Title, d.TTL = "", "\xff", -1
	_, err := notification.NewNotification(uuid.New(), d, now)
	require.ErrorIs(t, err, notification.ErrRequired)
	require.ErrorIs(t, err, notification.ErrInvalidUTF8)
	require.ErrorIs(t, err, notification.ErrTTLOutOfRange)
	var fe *notification.FieldError
	require.ErrorAs(t, err, &fe)
}

func TestPayloadTooLargeCarriesSizes(t *testing.T) {
	t.Parallel()
	d := validDraft()
	d.Data["blob"] = strings.Repeat("y", 5000)
	_, err := notification.NewNotification(uuid.New(), d, now)
	var tooLarge *notification.PayloadTooLargeError
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, notification.MaxPayloadBytes, tooLarge.Limit)
	assert.Greater(t, tooLarge.Size, 5000)
}

func TestPayloadSizeAtTheLimit(t *testing.T) {
	t.Parallel()
	d := notification.Draft{Recipient: "u", Type: "t", Content: notification.Content{Body: ""}}
	// {"notification":{"body":"..."}} is 28 bytes of framing.
	framing := notification.Content{Body: "x"}.PayloadSize() - 1
	d.Body = strings.Repeat("x", notification.MaxPayloadBytes-framing)
	_, err := notification.NewNotification(uuid.New(), d, now)
	require.NoError(t, err, "exactly 4096 bytes is allowed")
	d.Body += "x"
	_, err = notification.NewNotification(uuid.New(), d, now)
	require.ErrorIs(t, err, notification.ErrPayloadTooLarge, "4097 bytes is not")
}

func TestNotificationCopiesItsData(t *testing.T) {
	t.Parallel()
	d := validDraft()
	n, err := notification.NewNotification(uuid.New(), d, now)
	require.NoError(t, err)
	d.Data["course_id"] = "changed"
	assert.Equal(t, "c1", n.Content().Data["course_id"])
}

func TestMarkReadKeepsFirstTime(t *testing.T) {
	t.Parallel()
	n, err := notification.NewNotification(uuid.New(), validDraft(), now)
	require.NoError(t, err)
	require.False(t, n.IsRead())
	n.MarkRead(now.Add(time.Minute))
	n.MarkRead(now.Add(time.Hour))
	assert.Equal(t, now.Add(time.Minute), n.ReadAt())
}

func TestDeviceTokenValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		user     string
		token    string
		platform notification.Platform
		want     error
	}{
		{"valid", "u1", "fcm-token_123:APA91b", notification.PlatformAndroid, nil},
		{"empty token", "u1", "", notification.PlatformIOS, notification.ErrInvalidToken},
		{"token with space", "u1", "abc def", notification.PlatformIOS, notification.ErrInvalidToken},
		{"token with newline", "u1", "abc\ndef", notification.PlatformIOS, notification.ErrInvalidToken},
		{"non-ascii token", "u1", "tökén", notification.PlatformWeb, notification.ErrInvalidToken},
		{"oversized token", "u1", strings.Repeat("a", notification.MaxTokenLength+1), notification.PlatformWeb, notification.ErrInvalidToken},
		{"missing user", "", "tok", notification.PlatformWeb, notification.ErrRequired},
		{"unknown platform", "u1", "tok", "blackberry", notification.ErrUnknownPlatform},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := notification.NewDeviceToken(tt.user, tt.token, tt.platform, now)
			if tt.want == nil {
				require.NoError(t, err)
				assert.Equal(t, tt.token, tok.Token())
				return
			}
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestDeviceTokenStaleness(t *testing.T) {
	t.Parallel()
	tok, err := notification.NewDeviceToken("u", "tok", notification.PlatformAndroid, now)
	require.NoError(t, err)
	assert.False(t, tok.IsStale(now.Add(29*24*time.Hour), 30*24*time.Hour))
	assert.True(t, tok.IsStale(now.Add(31*24*time.Hour), 30*24*time.Hour))
}

func TestSendErrorUnwrapsToClassAndCause(t *testing.T) {
	t.Parallel()
	cause := errors.New("http 404")
	err := error(&notification.SendError{Class: notification.ErrTokenUnregistered, Code: "UNREGISTERED", Err: cause})
	assert.ErrorIs(t, err, notification.ErrTokenUnregistered)
	assert.ErrorIs(t, err, cause)
	assert.Equal(t, "token unregistered (UNREGISTERED)", err.Error())
}
