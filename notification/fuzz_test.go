package notification_test

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/herald-push/herald/notification"
)

// FuzzNewNotification: validation never panics, accepts only what FCM
// accepts, and rejects with the package's own errors.
func FuzzNewNotification(f *testing.F) {
	f.Add("user-1", "comment_created", "Hello", "World", "course_id", "c1", int64(3600))
	f.Add("", "", "", "", "", "", int64(-1))
	f.Add("u", "t", "\xff", strings.Repeat("x", 5000), "google.key", "\x00", int64(30*24*3600))
	f.Add("u", "t", "", "", "from", "v", int64(0))
	f.Fuzz(func(t *testing.T, recipient, typ, title, body, key, value string, ttlSeconds int64) {
		d := notification.Draft{Recipient: recipient, Type: typ, Content: notification.Content{
			Title: title, Body: body, Data: map[string]string{key: value}, TTL: time.Duration(ttlSeconds) * time.Second,
		}}
		n, err := notification.NewNotification(uuid.New(), d, time.Unix(1, 0))
		if err != nil {
			known := []error{notification.ErrRequired, notification.ErrTooLong, notification.ErrInvalidUTF8,
				notification.ErrReservedDataKey, notification.ErrPayloadTooLarge, notification.ErrTTLOutOfRange}
			for _, k := range known {
				if errors.Is(err, k) {
					return
				}
			}
			t.Fatalf("unexpected error type: %v", err)
		}
		c := n.Content()
		if c.PayloadSize() > notification.MaxPayloadBytes {
			t.Fatalf("accepted a payload of %d bytes", c.PayloadSize())
		}
		for k, v := range c.Data {
			if notification.IsReservedDataKey(k) || !utf8.ValidString(k) || !utf8.ValidString(v) {
				t.Fatalf("accepted data %q=%q", k, v)
			}
		}
		if !utf8.ValidString(c.Title) || !utf8.ValidString(c.Body) || strings.ContainsRune(c.Title+c.Body, 0) {
			t.Fatal("accepted invalid text")
		}
		if c.TTL < 0 || c.TTL > notification.MaxTTL {
			t.Fatalf("accepted ttl %s", c.TTL)
		}
	})
}

// FuzzDecodeEvent: decoding arbitrary bytes as an event never panics and
// fails only with ErrMalformedEvent.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"course_id":"c","comment_id":"m","commenter_id":"a","course_author_id":"b"}`))
	f.Add([]byte(`{"course_id":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{`))
	r := notification.NewRules()
	if err := notification.On(r, notification.NotifyCourseAuthor); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := r.Decode(notification.CommentCreatedType, data)
		if err != nil {
			if !errors.Is(err, notification.ErrMalformedEvent) {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		if _, err := r.Drafts(ev); err != nil {
			t.Fatalf("a decoded event must apply: %v", err)
		}
	})
}
