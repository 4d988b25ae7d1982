package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
)

// Forgetting a user never deadlocks a sender's claim, not even a claim of
// one of the user's pushes that the erasure could not lock in time: one
// the broadcast expander made, continuing the expansion of the user's
// notification, after the erasure had locked the user's open deliveries,
// to a phone registered to the user meanwhile. Such a claim holds the
// delivery and takes its devices' counts in device order; the erasure's
// last statement deleted the phone's count and then wanted the delivery
// (its notification's deliveries go with it): each waited for the other,
// and Postgres failed one of them after deadlock_timeout, the claim of
// every other push in its batch included.
func TestForgettingAUserNeverDeadlocksASendersClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newLockOrderFixture(t, "10ms")
	// The phone erin registers during the erasure, pushed to before under
	// another owner (so its device has a count), and vic's phone, whose
	// device comes first in device order: the claim takes its count first.
	const phone = "phone-of-walt-then-erin"
	f.registerAll(t, []string{"erin-old-phone"}, "erin")
	f.registerAll(t, []string{phone}, "walt")
	var vicPhone string
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT s FROM (SELECT 'phone-of-vic-' || g AS s FROM generate_series(1, 200) g) x
		WHERE hashtextextended(s, 0) < hashtextextended($1, 0) LIMIT 1`, phone).Scan(&vicPhone))
	f.registerAll(t, []string{vicPhone}, "vic")
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_device_counts (device, minute_start, minute_count, hour_start, hour_count, granted)
		SELECT hashtextextended(p, 0), now(), 1, now(), 1, 1 FROM unnest($1::text[]) p`, []string{phone, vicPhone})
	require.NoError(t, err)
	f.deliverAll(t, "vic", []string{vicPhone}, true)
	erins := uuid.New()
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES ($1, 'erin', 'test', 'hello', now())`, erins)
	require.NoError(t, err)
	var letter int64
	require.NoError(t, f.pool.QueryRow(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason)
		VALUES ('herald_outbox', 'm1', '{"v":1,"events":[{"type":"x","data":{"author":"erin"},"notifications":[]}]}', 'unknown event type')
		RETURNING id`).Scan(&letter))

	// A dead letter replay under way holds a letter naming erin: the
	// erasure, which has locked her tokens and open deliveries, waits for
	// it before its last statement.
	replay, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer replay.Rollback(ctx) //nolint:errcheck // test
	_, err = replay.Exec(ctx, `SELECT 1 FROM herald_dead_letters WHERE id = $1 FOR UPDATE`, letter)
	require.NoError(t, err)
	forgotten := make(chan error, 1)
	go func() { forgotten <- f.forgetter("erin")(ctx) }()
	waitForWaiters(t, f.pool, `%herald_dead_letters%`)

	// Meanwhile the phone moves to erin, and the expander continuing her
	// notification makes a push to it, due now.
	f.registerAll(t, []string{phone}, "erin")
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		VALUES ($1, $2, 'pending', now(), now(), now())`, erins, phone)
	require.NoError(t, err)

	// A claim takes both due pushes and counts vic's device first; another
	// claim holds that count a moment.
	other, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer other.Rollback(ctx) //nolint:errcheck // test
	_, err = other.Exec(ctx, `SELECT 1 FROM herald_device_counts WHERE device = hashtextextended($1, 0) FOR UPDATE`, vicPhone)
	require.NoError(t, err)
	claimed := make(chan error, 1)
	go func() {
		ds, err := f.repo.WithDeviceLimits(adapters.DeviceLimits{PerMinute: 1000, PerHour: 10000}).
			ClaimDue(ctx, time.Now(), 10, time.Minute)
		if err == nil && len(ds) != 2 {
			t.Errorf("claimed %d pushes, want 2", len(ds))
		}
		claimed <- err
	}()
	waitForWaiters(t, f.pool, `%WITH locked AS%`) // the claim (its text is cut before the counts)

	// The replay ends: the erasure's last statement runs, and waits for
	// the claim's hold on erin's push; then the other claim ends.
	require.NoError(t, replay.Rollback(ctx))
	waitForWaiters(t, f.pool, `%WITH notifications AS (DELETE%`)
	require.NoError(t, other.Commit(ctx))

	require.NoError(t, <-claimed, "the claim")
	require.NoError(t, <-forgotten, "the erasure")
	var left int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_device_counts WHERE device = hashtextextended($1, 0)`,
		phone).Scan(&left))
	assert.Zero(t, left, "the phone's count outlived the erasure")
}

// waitForWaiters waits until a statement of the pool's database whose text
// is like pattern waits for a lock.
func waitForWaiters(t *testing.T, pool *pgxpool.Pool, pattern string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var waiting bool
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1)`, pattern).Scan(&waiting))
		if waiting {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no statement like %q ever waited", pattern)
}
