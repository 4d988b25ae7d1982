package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// Hand-written fakes for the sender's unit tests: an in-memory delivery
// store with the claim and record rules of the Postgres one, a scripted
// pusher, a clock that moves only when told, and a log that can be read.

// fakeClock is a clock that stands still until advanced.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// memStore is an app.DeliveryStore in memory. Like the Postgres one, it
// claims due open deliveries oldest first, closes those whose token left
// the registry instead of claiming them, records outcomes only for the
// current claim, and deletes the token of a pruned delivery.
type memStore struct {
	mu         sync.Mutex
	rows       []*storedDelivery
	tokens     map[string]notification.Platform
	claimCalls int
}

type storedDelivery struct {
	d        *notification.Delivery
	platform notification.Platform
}

func newMemStore() *memStore { return &memStore{tokens: map[string]notification.Platform{}} }

// add creates a pending delivery to token, due at due, and registers token.
func (s *memStore) add(token string, platform notification.Platform, due time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := int64(len(s.rows) + 1)
	s.tokens[token] = platform
	s.rows = append(s.rows, &storedDelivery{platform: platform, d: notification.DeliveryFromDatabase(
		id, uuid.New(), token, notification.StatusPending, 0, due, uuid.Nil, "", "", "", due)})
	return id
}

func (s *memStore) ClaimDue(_ context.Context, now time.Time, limit int, lease time.Duration) ([]app.Dispatch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claimCalls++
	var due []*storedDelivery
	for _, r := range s.rows {
		st := r.d.Status()
		if (st == notification.StatusPending || st == notification.StatusRetryScheduled || st == notification.StatusClaimed) &&
			!r.d.DueAt().After(now) {
			due = append(due, r)
		}
	}
	slices.SortStableFunc(due, func(a, b *storedDelivery) int { return a.d.DueAt().Compare(b.d.DueAt()) })
	claimID := uuid.New()
	var out []app.Dispatch
	for _, r := range due {
		if len(out) == limit {
			break
		}
		d := r.d
		if _, live := s.tokens[d.Token()]; !live {
			r.d = notification.DeliveryFromDatabase(d.ID(), d.NotificationID(), d.Token(), notification.StatusTokenPruned,
				d.Attempts(), now, uuid.Nil, "token removed from the registry before the push", "TOKEN_REMOVED", "", now)
			continue
		}
		r.d = notification.DeliveryFromDatabase(d.ID(), d.NotificationID(), d.Token(), notification.StatusClaimed,
			d.Attempts(), now.Add(lease), claimID, d.LastError(), d.ErrorCode(), "", now)
		claimed := notification.DeliveryFromDatabase(d.ID(), d.NotificationID(), d.Token(), notification.StatusClaimed,
			d.Attempts(), now.Add(lease), claimID, d.LastError(), d.ErrorCode(), "", now)
		out = append(out, app.Dispatch{Delivery: claimed, Message: notification.Message{
			NotificationID: d.NotificationID(), Token: d.Token(), Platform: r.platform,
			Content: notification.Content{Title: "secret title", Body: "secret body"},
		}})
	}
	return out, nil
}

func (s *memStore) Record(_ context.Context, ds []*notification.Delivery) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, d := range ds {
		r := s.rows[d.ID()-1]
		if r.d.Status() != notification.StatusClaimed || r.d.ClaimID() != d.ClaimID() {
			continue
		}
		r.d = notification.DeliveryFromDatabase(d.ID(), d.NotificationID(), d.Token(), d.Status(), d.Attempts(),
			d.DueAt(), uuid.Nil, d.LastError(), d.ErrorCode(), d.MessageName(), d.UpdatedAt())
		if d.Status() == notification.StatusTokenPruned {
			delete(s.tokens, d.Token())
		}
		n++
	}
	return n, nil
}

func (s *memStore) StillClaimed(_ context.Context, d *notification.Delivery) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rows[d.ID()-1]
	return r.d.Status() == notification.StatusClaimed && r.d.ClaimID() == d.ClaimID(), nil
}

// delivery returns the stored state of delivery id.
func (s *memStore) delivery(id int64) *notification.Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows[id-1].d
}

// statuses counts the deliveries to tokens for which match is true, by status.
func (s *memStore) statuses(match func(token string) bool) map[notification.DeliveryStatus]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := map[notification.DeliveryStatus]int{}
	for _, r := range s.rows {
		if match(r.d.Token()) {
			counts[r.d.Status()]++
		}
	}
	return counts
}

func (s *memStore) hasToken(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.tokens[token]
	return ok
}

// fakePusher answers each push with what answer says for its message, and
// counts the pushes per token.
type fakePusher struct {
	mu     sync.Mutex
	answer func(msg notification.Message) error
	calls  map[string]int
}

func newFakePusher(answer func(msg notification.Message) error) *fakePusher {
	return &fakePusher{answer: answer, calls: map[string]int{}}
}

func (p *fakePusher) Push(_ context.Context, msg notification.Message) (string, error) {
	p.mu.Lock()
	p.calls[msg.Token]++
	answer := p.answer
	p.mu.Unlock()
	if err := answer(msg); err != nil {
		return "", err
	}
	return "projects/p/messages/" + uuid.NewString(), nil
}

func (p *fakePusher) setAnswer(answer func(msg notification.Message) error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answer = answer
}

// callsTo counts the pushes to tokens for which match is true.
func (p *fakePusher) callsTo(match func(token string) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for tok, c := range p.calls {
		if match(tok) {
			n += c
		}
	}
	return n
}

func hasPrefix(prefix string) func(string) bool {
	return func(tok string) bool { return strings.HasPrefix(tok, prefix) }
}

func sendErr(class error, code string, retryAfter time.Duration) error {
	return &notification.SendError{Class: class, Code: code, Reason: "scripted by the test", RetryAfter: retryAfter}
}

// logBuffer collects JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the decoded log lines whose message contains msg.
func (b *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	return b.linesWhere(t, func(rec map[string]any) bool { return strings.Contains(fmt.Sprint(rec["msg"]), msg) })
}

// linesWhere returns the decoded log lines for which match is true.
func (b *logBuffer) linesWhere(t *testing.T, match func(map[string]any) bool) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		if match(rec) {
			out = append(out, rec)
		}
	}
	return out
}

// senderConfig is a sender on clock that pushes one at a time (so the
// order of pushes and answers is the claim order), with Jitter 0.
func senderConfig(clock *fakeClock) app.SenderConfig {
	return app.SenderConfig{
		MaxInFlight:   1,
		PollInterval:  5 * time.Millisecond,
		FlushInterval: 5 * time.Millisecond,
		Now:           clock.Now,
		Jitter:        func() float64 { return 0 },
	}
}

// runSender runs a sender until the test ends.
func runSender(t *testing.T, store app.DeliveryStore, pusher app.Pusher, cfg app.SenderConfig) *app.Sender {
	t.Helper()
	s, err := app.NewSender(store, pusher, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		assert.NoError(t, s.Run(ctx))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// waitFor is a generous wait for the sender's goroutines, not a timing claim.
const waitFor = 10 * time.Second
