package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// benchMessage is a push of the personalised campaign: a real-length
// Android token, a title, a body, one data key and a time to live.
func benchMessage(platform notification.Platform) notification.Message {
	return notification.Message{
		Token:    "cXkR2mXbQ0uY7pL4vN9aZ1:APA91bHk3Jd8sLq0Wm5Zx2Vb7Nc4TgHk3Jd8sLq0Wm5Zx2Vb7Nc4Tg000000001",
		Platform: platform,
		Content: notification.Content{Title: "Hello Member 1", Body: "Member 1, offer #1 is waiting for you",
			Data: map[string]string{"offer": "1"}, TTL: time.Hour},
	}
}

// BenchmarkFCMMessage builds the SDK message of one push: to an Android
// token (the usual push), and to a token whose platform is unknown (every
// platform's block).
func BenchmarkFCMMessage(b *testing.B) {
	now := time.Now()
	for _, platform := range []notification.Platform{notification.PlatformAndroid, ""} {
		b.Run("platform="+platformName(platform), func(b *testing.B) {
			msg := benchMessage(platform)
			b.ReportAllocs()
			for b.Loop() {
				if adapters.FCMMessage(msg, now) == nil {
					b.Fatal("no message")
				}
			}
		})
	}
}

// BenchmarkFCMSenderPush pushes one message through the firebase SDK to
// the fake FCM, one at a time. Most of its allocations are the SDK's and
// net/http's; Herald's are its contexts, the message it builds and the
// transport's breaker and ramp.
func BenchmarkFCMSenderPush(b *testing.B) {
	fake, sender := newSender(b, adapters.FCMSenderConfig{})
	msg := benchMessage(notification.PlatformAndroid)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sender.Push(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	if fake.AcceptedCount() == 0 {
		b.Fatal("the fake accepted nothing")
	}
}

func platformName(p notification.Platform) string {
	if p == "" {
		return "unknown"
	}
	return string(p)
}
