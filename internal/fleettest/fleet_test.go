package fleettest_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/internal/fakefcm"
	"github.com/herald-push/herald/testutil"
)

// pushLog records when each push the fake FCM accepted reached it, by
// token.
type pushLog struct {
	mu  sync.Mutex
	at  []time.Time
	per map[string]int
	// faultAt is when the fake first answered a push with a scripted fault.
	faultAt time.Time
}

func newPushLog() *pushLog { return &pushLog{per: map[string]int{}} }

func (l *pushLog) observe(r fakefcm.Received) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.at = append(l.at, r.Arrived)
	l.per[r.Token]++
}

func (l *pushLog) fault(_ string, _ fakefcm.FaultCode, answered time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.faultAt.IsZero() {
		l.faultAt = answered
	}
}

// faulted returns when the fake first answered a push with a fault.
func (l *pushLog) faulted() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.faultAt, !l.faultAt.IsZero()
}

func (l *pushLog) times() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.at)
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func (l *pushLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.at)
}

// tally returns how many of tokens were never pushed, and how many pushes
// went to a token already pushed.
func (l *pushLog) tally(tokens []string) (lost, duplicates int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, tok := range tokens {
		switch n := l.per[tok]; {
		case n == 0:
			lost++
		case n > 1:
			duplicates += n - 1
		}
	}
	return lost, duplicates
}

// busiestSecond is the most pushes in any one-second window (sliding, from
// each push) among times, which must be sorted, and when that window
// starts after the first push.
func busiestSecond(times []time.Time) (int, time.Duration) {
	best, j, at := 0, 0, time.Duration(0)
	for i := range times {
		for times[i].Sub(times[j]) >= time.Second {
			j++
		}
		if i-j+1 > best {
			best, at = i-j+1, times[j].Sub(times[0])
		}
	}
	return best, at
}

// startFake starts a fake FCM in this process that logs every push it
// accepts, with a round trip like a near FCM's.
func startFake(t *testing.T) (*fakefcm.Server, *pushLog) {
	t.Helper()
	log := newPushLog()
	fake, err := fakefcm.Start(fakefcm.Config{Latency: 10 * time.Millisecond, DontRecord: true, OnAccept: log.observe,
		OnFault: log.fault})
	require.NoError(t, err)
	t.Cleanup(fake.Close)
	return fake, log
}

// backlog writes n deliveries due now, each to its own device token of one
// recipient, and returns the tokens.
func backlog(t *testing.T, pool *pgxpool.Pool, name string, n int) []string {
	t.Helper()
	ctx := context.Background()
	user := "fleet-" + name
	_, err := pool.Exec(ctx, `
		INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT $1 || '-' || lpad(i::text, 6, '0'), $1, 'android', now(), now() FROM generate_series(1, $2) i`, user, n)
	require.NoError(t, err)
	id := uuid.New()
	_, err = pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES ($1, $2, 'fleet', 'fleet test', now())`, id, user)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `
		INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT $1, token, 'pending', now(), now(), now() FROM herald_device_tokens WHERE user_id = $2`, id, user)
	require.NoError(t, err)
	tokens := make([]string, n)
	for i := range n {
		tokens[i] = fmt.Sprintf("%s-%06d", user, i+1)
	}
	return tokens
}

// waitInstances waits until n instances are registered.
func waitInstances(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		var have int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM herald_instances`).Scan(&have)
		return err == nil && have == n
	}, 60*time.Second, 50*time.Millisecond, "%d instances register", n)
}

func newDatabase(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	url := testutil.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return url, pool
}
