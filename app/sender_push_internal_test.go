package app

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/internal/telemetry"
	"github.com/herald-push/herald/notification"
)

// acceptingPusher accepts every push at once.
type acceptingPusher struct{}

func (acceptingPusher) Push(context.Context, notification.Message) (string, error) {
	return "projects/p/messages/1", nil
}

// BenchmarkSenderPush is one claimed delivery through the sender's push
// path (the checks, the rate limiter, the push span, the push, marking it
// sent and handing it to the recorder) with a pusher that accepts at once:
// the sender's own cost per push, without telemetry and with OpenTelemetry's
// global (no-op) providers, as a host that sets none runs it. Each
// iteration also makes the claimed delivery it pushes (one allocation, 176
// bytes).
func BenchmarkSenderPush(b *testing.B) {
	for _, c := range []struct {
		name string
		tel  *telemetry.Telemetry
	}{
		{"telemetry=nil", nil},
		{"telemetry=global", telemetry.New(telemetry.Config{})},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, err := NewSender(idleStore{}, acceptingPusher{}, SenderConfig{
				MaxInFlight: 1, RatePerMinute: 1 << 40, Telemetry: c.tel})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			detached := context.WithoutCancel(ctx) // as a worker makes it
			msg := notification.Message{NotificationID: uuid.Must(uuid.NewV7()),
				Token: "cXkR2mXbQ0uY7pL4vN9aZ1:APA91bHk3Jd8sLq0Wm5Zx2Vb7Nc4Tg", Platform: notification.PlatformAndroid,
				Content: notification.Content{Title: "Hello", Body: "Offer #1 is waiting for you"}}
			claimID := uuid.New()
			b.ReportAllocs()
			for b.Loop() {
				now := time.Now()
				d := Dispatch{Message: msg, Delivery: notification.DeliveryFromDatabase(1, msg.NotificationID, msg.Token,
					notification.StatusClaimed, 0, now.Add(s.cfg.Lease), claimID, "", "", "", now)}
				s.held.Add(1)
				s.push(ctx, detached, d)
				if got := <-s.outcomes; got.Status() != notification.StatusSent {
					b.Fatalf("status %s, want sent", got.Status())
				}
			}
		})
	}
}
