package outbox_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// campaignEvent is a host event making one personalised notification.
type campaignEvent struct {
	UserID string `json:"user_id"`
	Offer  int    `json:"offer"`
}

func (campaignEvent) EventType() string { return "bench_campaign" }

func campaignRules(b *testing.B) *notification.Rules {
	b.Helper()
	rules := notification.NewRules()
	err := notification.On(rules, func(e campaignEvent) ([]notification.Draft, error) {
		offer := strconv.Itoa(e.Offer)
		return []notification.Draft{{Recipient: e.UserID, Type: "campaign", Content: notification.Content{
			Title: "Hello " + e.UserID, Body: "Offer #" + offer + " is waiting for you",
			Data: map[string]string{"offer": offer},
		}}}, nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return rules
}

// BenchmarkRaise raises events in host transactions (begin, Raise, commit)
// of 1 and of 1,000 events; events/s is the figure to compare.
func BenchmarkRaise(b *testing.B) {
	for _, perTx := range []int{1, 1000} {
		b.Run(fmt.Sprintf("events_per_tx=%d", perTx), func(b *testing.B) {
			pool := testutil.NewPool(b)
			ob := outbox.New(campaignRules(b), adapters.NotificationWriterIn, outbox.Config{})
			ctx := context.Background()
			events := make([]notification.Event, perTx)
			seq := 0
			for b.Loop() {
				for i := range events {
					seq++
					events[i] = campaignEvent{UserID: "user-" + strconv.Itoa(seq), Offer: seq}
				}
				tx, err := pool.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ob.Raise(ctx, tx, events...); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*perTx)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkRelay measures how fast the relay turns committed outbox
// messages into deliveries when every host transaction raised one event
// (the common case: one request, one event). Each iteration commits 100
// such messages at once (100 Raise calls in one transaction, outside the
// timer) and waits until the relay has expanded them all.
func BenchmarkRelay(b *testing.B) {
	const perIteration = 100
	pool := testutil.NewPool(b)
	rules := campaignRules(b)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	relay, err := outbox.NewRelay(pool, rules, adapters.RelayStoreIn, outbox.RelayConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- relay.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			b.Error(err)
		}
	}()
	seq := 0
	for b.Loop() {
		b.StopTimer()
		tx, err := pool.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for range perIteration {
			seq++
			if _, err := ob.Raise(ctx, tx, campaignEvent{UserID: "user-" + strconv.Itoa(seq), Offer: seq}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		for relay.Stats().Messages < int64(seq) {
			time.Sleep(100 * time.Microsecond)
		}
	}
	b.ReportMetric(float64(b.N*perIteration)/b.Elapsed().Seconds(), "messages/s")
}
