package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

// BenchmarkDeleteFinishedDeliveries is one housekeeping batch at the
// default batch size (5,000): that many sent deliveries past their
// retention, then that many failed ones, among 50,000 recent deliveries it
// keeps. The rows are seeded outside the timer.
func BenchmarkDeleteFinishedDeliveries(b *testing.B) {
	const batch, kept = 5000, 50_000
	pool := testutil.NewPool(b)
	ctx := context.Background()
	seed := func(n int, status, age string) {
		b.Helper()
		if _, err := pool.Exec(ctx, `
			WITH n AS (INSERT INTO herald_notifications (id, recipient, type, title, created_at)
				VALUES (gen_random_uuid(), 'user', 'test', 'hello', now()) RETURNING id)
			INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
			SELECT n.id, 'token-' || g, $2, now(), now(), now() - $3::interval - g * interval '1 second'
			FROM n, generate_series(1, $1) g`, n, status, age); err != nil {
			b.Fatal(err)
		}
	}
	seed(kept, "sent", "0 seconds")
	if _, err := pool.Exec(ctx, `ANALYZE herald_deliveries`); err != nil {
		b.Fatal(err)
	}
	house := adapters.NewPostgresHousekeepingRepository(pool)
	month := 30 * 24 * time.Hour
	// walBytes is the WAL written by the deletes: a lock pass before them
	// shows as a record a row.
	var walBytes, before float64
	lsn := func() float64 {
		var at float64
		if err := pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn() - '0/0'`).Scan(&at); err != nil {
			b.Fatal(err)
		}
		return at
	}
	for b.Loop() {
		b.StopTimer()
		seed(batch, "sent", "60 days")
		seed(batch, "failed", "60 days")
		before = lsn()
		b.StartTimer()
		n, err := house.DeleteFinishedDeliveries(ctx, month, month, batch)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if n != 2*batch {
			b.Fatalf("deleted %d, want %d", n, 2*batch)
		}
		walBytes += lsn() - before
		b.StartTimer()
	}
	rows := float64(b.N * 2 * batch)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/rows, "ns/row")
	b.ReportMetric(walBytes/rows, "WAL-B/row")
}
