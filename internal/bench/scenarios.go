package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"firebase.google.com/go/v4/messaging"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/internal/cli"
	"github.com/herald-push/herald/notification"
)

// benchCampaign is the bench host's event for one personalised push: a
// marketing campaign addressed to one user by name.
type benchCampaign struct {
	UserID string `json:"user_id"`
	Name   string `json:"name"`
	// Offer numbers the push; the bench uses the user's key.
	Offer int `json:"offer"`
}

// EventType implements notification.Event.
func (benchCampaign) EventType() string { return "bench_campaign_message" }

// benchCampaignContent is the push a benchCampaign makes: its own title and
// body per user, and the key in the data so the fake can check it.
func benchCampaignContent(name string, offer int) notification.Content {
	return notification.Content{
		Title: "Hello " + name,
		Body:  name + ", offer #" + strconv.Itoa(offer) + " is waiting for you",
		Data:  map[string]string{benchDataKey: strconv.Itoa(offer)},
	}
}

func benchCampaignRule(e benchCampaign) ([]notification.Draft, error) {
	return []notification.Draft{{Recipient: e.UserID, Type: "bench_campaign", Content: benchCampaignContent(e.Name, e.Offer)}}, nil
}

// benchAnnouncement is the bench host's event for a broadcast to every device.
type benchAnnouncement struct {
	Text string `json:"text"`
}

// EventType implements notification.Event.
func (benchAnnouncement) EventType() string { return "bench_announcement" }

func benchAnnouncementRule(e benchAnnouncement) ([]notification.Draft, error) {
	return []notification.Draft{{Type: "bench_announcement", Broadcast: &notification.Audience{},
		Content: notification.Content{Title: "News", Body: e.Text}}}, nil
}

// benchTokenFiller makes bench tokens as long as real FCM registration
// tokens (about 163 bytes), so rows, indexes and requests are real-sized.
var benchTokenFiller = "cXkR2mXbQ0uY7pL4vN9aZ1:APA91b" + strings.Repeat("Hk3Jd8sLq0Wm5Zx2Vb7Nc4Tg", 5) + "_"

// benchToken is key's token; benchTokenKey recovers the key from it.
func benchToken(key int) string { return fmt.Sprintf("%s%09d", benchTokenFiller, key) }

func benchUser(key int) string { return fmt.Sprintf("user-%07d", key) }

func benchName(key int) string { return "Member " + strconv.Itoa(key) }

// benchLoadTokens registers one android token for each of users 0..n-1 with
// UpsertMany, in chunks so that the bench itself holds little memory.
func benchLoadTokens(ctx context.Context, pool *pgxpool.Pool, n int, progressf func(string, ...any)) error {
	return benchLoadDevices(ctx, pool, n, 1, progressf)
}

// benchLoadDevices registers n android tokens, perUser to a user: token k
// belongs to user k/perUser.
func benchLoadDevices(ctx context.Context, pool *pgxpool.Pool, n, perUser int, progressf func(string, ...any)) error {
	repo := adapters.NewPostgresDeviceTokenRepository(pool)
	now := time.Now()
	const chunk = 50_000
	for from := 0; from < n; from += chunk {
		ts := make([]*notification.DeviceToken, 0, min(chunk, n-from))
		for k := from; k < min(from+chunk, n); k++ {
			t, err := notification.NewDeviceToken(benchUser(k/perUser), benchToken(k), notification.PlatformAndroid, now)
			if err != nil {
				return err
			}
			ts = append(ts, t)
		}
		if err := repo.UpsertMany(ctx, ts); err != nil {
			return err
		}
		if n > 200_000 && (from/chunk)%4 == 3 {
			progressf("loaded %d of %d tokens", from+len(ts), n)
		}
	}
	return nil
}

func benchRules[E notification.Event](rule func(E) ([]notification.Draft, error)) *notification.Rules {
	rules := notification.NewRules()
	if err := notification.On(rules, rule); err != nil {
		panic(err) // one rule in fresh rules: cannot fail
	}
	return rules
}

// benchPersonalisedScenario: n users with one token each get one personalised
// push each, raised in host transactions of -tx-size events.
func benchPersonalisedScenario(o benchOptions) *benchScenario {
	n := o.n
	return &benchScenario{
		name:  "personalised",
		keys:  n,
		rules: benchRules(benchCampaignRule),
		raise: func(ctx context.Context, h *herald.Herald, pool *pgxpool.Pool, log *benchCommitLog) error {
			txs := (n + o.txSize - 1) / o.txSize
			var next atomic.Int64
			return benchWorkers(o.writers, func() error {
				for {
					t := int(next.Add(1) - 1)
					if t >= txs {
						return nil
					}
					from, to := t*o.txSize, min((t+1)*o.txSize, n)
					events := make([]notification.Event, 0, to-from)
					for k := from; k < to; k++ {
						events = append(events, benchCampaign{UserID: benchUser(k), Name: benchName(k), Offer: k})
					}
					if err := benchRaiseAndCommit(ctx, h, pool, events...); err != nil {
						return err
					}
					log.committed(from, to)
				}
			})
		},
		message: func(k int) *messaging.Message {
			c := benchCampaignContent(benchName(k), k)
			return &messaging.Message{Token: benchToken(k), Data: c.Data,
				Notification: &messaging.Notification{Title: c.Title, Body: c.Body}}
		},
	}
}

// benchBroadcastScenario: one event whose rule broadcasts to every one of
// -tokens registered devices.
func benchBroadcastScenario(o benchOptions) *benchScenario {
	n := o.tokens
	return &benchScenario{
		name:  "broadcast",
		keys:  n,
		rules: benchRules(benchAnnouncementRule),
		raise: func(ctx context.Context, h *herald.Herald, pool *pgxpool.Pool, log *benchCommitLog) error {
			if err := benchRaiseAndCommit(ctx, h, pool, benchAnnouncement{Text: "Version 2 is out"}); err != nil {
				return err
			}
			log.committed(0, n)
			return nil
		},
	}
}

// benchLatencyScenario: a steady -rate events per second for -duration, each
// in its own host transaction, each to a different user with one token.
func benchLatencyScenario(o benchOptions) *benchScenario {
	n := max(1, int(o.duration.Seconds()*float64(o.rate)))
	return &benchScenario{
		name:  "latency",
		keys:  n,
		rules: benchRules(benchCampaignRule),
		raise: func(ctx context.Context, h *herald.Herald, pool *pgxpool.Pool, log *benchCommitLog) error {
			// Each event is its own request of the host: it starts on
			// schedule whether or not earlier ones have committed.
			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				firstErr error
			)
			start := time.Now()
			for k := range n {
				at := start.Add(time.Duration(k) * time.Second / time.Duration(o.rate))
				if !cli.Sleep(ctx, time.Until(at)) {
					break
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := benchRaiseAndCommit(ctx, h, pool, benchCampaign{UserID: benchUser(k), Name: benchName(k), Offer: k})
					if err == nil {
						log.committed(k, k+1)
						return
					}
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}()
			}
			wg.Wait()
			return errors.Join(firstErr, ctx.Err())
		},
	}
}

// benchRaiseAndCommit is the host's code: its own transaction, Herald's Raise
// in it, commit.
func benchRaiseAndCommit(ctx context.Context, h *herald.Herald, pool *pgxpool.Pool, events ...notification.Event) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // no-op after commit
	if _, err := h.Raise(ctx, tx, events...); err != nil {
		return fmt.Errorf("raise: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// benchWorkers runs fn on n goroutines and returns the first error.
func benchWorkers(n int, fn func() error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
