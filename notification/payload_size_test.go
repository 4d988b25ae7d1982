package notification_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/notification"
)

// payloadJSON is the payload Content.PayloadSize measures, written by
// encoding/json: its length is the size by definition.
func payloadJSON(t testing.TB, c notification.Content) []byte {
	t.Helper()
	type text struct {
		Title string `json:"title,omitempty"`
		Body  string `json:"body,omitempty"`
	}
	payload := struct {
		Notification *text             `json:"notification,omitempty"`
		Data         map[string]string `json:"data,omitempty"`
	}{Data: c.Data}
	if c.Title != "" || c.Body != "" {
		payload.Notification = &text{c.Title, c.Body}
	}
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPayloadSizeIsTheLengthOfThePayloadAsEncodingJSONWritesIt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		c    notification.Content
	}{
		{"empty", notification.Content{}},
		{"title only", notification.Content{Title: "Hello"}},
		{"body only", notification.Content{Body: "World"}},
		{"title and body", notification.Content{Title: "Hello", Body: "World"}},
		{"data only", notification.Content{Data: map[string]string{"k": "v"}}},
		{"empty data", notification.Content{Title: "t", Data: map[string]string{}}},
		{"everything", notification.Content{Title: "t", Body: "b", Data: map[string]string{"a": "1", "b": "2", "": ""}}},
		{"escaped", notification.Content{Title: `"quoted" \ back`, Body: "tab\tline\nreturn\rbell\bfeed\f",
			Data: map[string]string{"<key>": "a & b", "ctl\x01": "\x1f\x7f"}}},
		{"unicode", notification.Content{Title: "héllo wörld ✓ 🎉", Body: "line\u2028para\u2029end"}},
		{"invalid UTF-8", notification.Content{Title: "\xff\xfe", Body: "a\xc3", Data: map[string]string{"\xe2\x82": "\xed\xa0\x80"}}},
		{"NUL", notification.Content{Body: "a\x00b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got, want := tt.c.PayloadSize(), len(payloadJSON(t, tt.c)); got != want {
				t.Fatalf("PayloadSize() = %d, want %d (%s)", got, want, payloadJSON(t, tt.c))
			}
		})
	}
}

// FuzzPayloadSize: the counted size is the length of the JSON for any
// content, valid or not.
func FuzzPayloadSize(f *testing.F) {
	f.Add("Hello", "World", "k", "v", "k2", "v2")
	f.Add("", "", "", "", "", "")
	f.Add("<&>", "\u2028\u2029", "\x00\x1f", "\xff", "\"\\", "\b\f\n\r\t")
	f.Fuzz(func(t *testing.T, title, body, k1, v1, k2, v2 string) {
		for _, c := range []notification.Content{
			{Title: title, Body: body},
			{Title: title, Body: body, Data: map[string]string{k1: v1, k2: v2}},
			{Data: map[string]string{k1: v1}},
		} {
			if got, want := c.PayloadSize(), len(payloadJSON(t, c)); got != want {
				t.Fatalf("PayloadSize() = %d, want %d (%s)", got, want, payloadJSON(t, c))
			}
		}
	})
}

// BenchmarkNewNotification validates and makes one notification of the
// personalised campaign (a title, a body, one data key), as Raise does for
// each: most of its cost was the payload's size.
func BenchmarkNewNotification(b *testing.B) {
	d := notification.Draft{Recipient: "user-1", Type: "campaign", Content: notification.Content{
		Title: "Hello Member 1", Body: "Member 1, offer #1 is waiting for you", Data: map[string]string{"offer": "1"}}}
	id, createdAt := uuid.New(), time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := notification.NewNotification(id, d, createdAt); err != nil {
			b.Fatal(err)
		}
	}
}
