package adapters_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// benchBatch is the sender's default batch: one claim and one record.
const benchBatch = 500

// benchLease is the sender's default lease.
const benchLease = time.Minute

// seedPendingDeliveries fills a fresh database with n users, each with one
// token of real length and one personalised notification, and n pending
// deliveries, all due at seededAt, in three statements.
func seedPendingDeliveries(b *testing.B, pool *pgxpool.Pool, n int, seededAt time.Time) {
	b.Helper()
	ctx := context.Background()
	steps := []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		  SELECT 'cXkR2mXbQ0uY7pL4vN9aZ1:APA91b' || repeat('Hk3Jd8sLq0Wm5Zx2Vb7Nc4Tg', 5) || lpad(g::text, 9, '0'),
			'user-' || g, 'android', $1, $1
		  FROM generate_series(1, $2) g`, []any{seededAt, n}},
		{`INSERT INTO herald_notifications (id, recipient, type, title, body, data, created_at)
		  SELECT gen_random_uuid(), 'user-' || g, 'campaign', 'Hello Member ' || g,
			'Member ' || g || ', offer #' || g || ' is waiting for you', jsonb_build_object('i', g::text), $1
		  FROM generate_series(1, $2) g`, []any{seededAt, n}},
		{`INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		  SELECT n.id, t.token, 'pending', $1, $1, $1
		  FROM herald_notifications n JOIN herald_device_tokens t ON t.user_id = n.recipient`, []any{seededAt}},
		{`ANALYZE`, nil},
	}
	for _, step := range steps {
		if _, err := pool.Exec(ctx, step.sql, step.args...); err != nil {
			b.Fatalf("seed %d deliveries: %v", n, err)
		}
	}
}

// BenchmarkClaimDue claims batches of 500 from a table of N open
// deliveries. Leases end by the database's clock, so each iteration claims
// with a zero lease: every claimed delivery is due again at once (as an
// expired claim) and the table keeps N open rows.
func BenchmarkClaimDue(b *testing.B) {
	for _, pending := range []int{10_000, 200_000} {
		// Per-device limits on (Herald's default) cost one upsert per
		// device per claim; here set too high to hold anything back, so
		// that only their cost shows.
		for _, limits := range []struct {
			name string
			l    adapters.DeviceLimits
		}{{"off", adapters.DeviceLimits{}}, {"on", adapters.DeviceLimits{PerMinute: 1 << 30, PerHour: 1 << 30}}} {
			b.Run(fmt.Sprintf("pending=%d/device_limits=%s", pending, limits.name), func(b *testing.B) {
				pool := testutil.NewPool(b)
				now := time.Now().Add(-time.Hour)
				seedPendingDeliveries(b, pool, pending, now)
				repo := adapters.NewPostgresDeliveryRepository(pool).WithDeviceLimits(limits.l)
				ctx := context.Background()
				for b.Loop() {
					batch, err := repo.ClaimDue(ctx, now, benchBatch, 0)
					if err != nil {
						b.Fatal(err)
					}
					if len(batch) != benchBatch {
						b.Fatalf("claimed %d, want %d", len(batch), benchBatch)
					}
				}
				b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "deliveries/s")
			})
		}
	}
}

// BenchmarkRecord records batches of 500 sent deliveries (one statement
// each). The claims are made outside the timer; when the open deliveries
// run out, they are reopened outside the timer too.
func BenchmarkRecord(b *testing.B) {
	const pending = 100_000
	pool := testutil.NewPool(b)
	now := time.Now().Add(-time.Hour)
	seedPendingDeliveries(b, pool, pending, now)
	repo := adapters.NewPostgresDeliveryRepository(pool)
	ctx := context.Background()
	claim := func() []app.Dispatch {
		for range 2 {
			now = now.Add(time.Millisecond)
			batch, err := repo.ClaimDue(ctx, now, benchBatch, benchLease)
			if err != nil {
				b.Fatal(err)
			}
			if len(batch) == benchBatch {
				return batch
			}
			if _, err := pool.Exec(ctx, `UPDATE herald_deliveries SET status = 'pending', due_at = $1, claim_id = NULL
				WHERE status <> 'pending'`, now); err != nil {
				b.Fatal(err)
			}
		}
		b.Fatal("could not claim a full batch")
		return nil
	}
	ds := make([]*notification.Delivery, benchBatch)
	for b.Loop() {
		b.StopTimer()
		for i, d := range claim() {
			if err := d.Delivery.MarkSent(fmt.Sprintf("projects/p/messages/%d", i), now); err != nil {
				b.Fatal(err)
			}
			ds[i] = d.Delivery
		}
		b.StartTimer()
		n, err := repo.Record(ctx, ds)
		if err != nil {
			b.Fatal(err)
		}
		if n != benchBatch {
			b.Fatalf("recorded %d, want %d", n, benchBatch)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkExpandBroadcastChunk expands a broadcast to 100,000 tokens of
// real length in chunks of 5,000 (Broadcast.ChunkSize's default). When one
// broadcast is done, the next is recorded outside the timer.
func BenchmarkExpandBroadcastChunk(b *testing.B) {
	const tokens, chunk = 100_000, 5_000
	pool := testutil.NewPool(b)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT 'cXkR2mXbQ0uY7pL4vN9aZ1:APA91b' || repeat('Hk3Jd8sLq0Wm5Zx2Vb7Nc4Tg', 5) || lpad(g::text, 9, '0'),
			'user-' || g, 'android', now(), now()
		FROM generate_series(1, $1) g`, tokens); err != nil {
		b.Fatal(err)
	}
	broadcast := func() {
		if _, err := pool.Exec(ctx, `
			WITH n AS (INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
				VALUES (gen_random_uuid(), '', 'news', 'for all', '{}', now()) RETURNING id)
			INSERT INTO herald_broadcasts (notification_id, created_at) SELECT id, now() FROM n;
			ANALYZE`); err != nil {
			b.Fatal(err)
		}
	}
	broadcast()
	repo := adapters.NewPostgresDeliveryRepository(pool)
	for b.Loop() {
		res, err := repo.ExpandBroadcastChunk(ctx, chunk)
		created, found := res.Created, res.Found
		if err != nil || !found {
			b.Fatalf("expanded %d, found %v: %v", created, found, err)
		}
		if created < chunk {
			b.StopTimer()
			broadcast()
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.N*chunk)/b.Elapsed().Seconds(), "deliveries/s")
}
