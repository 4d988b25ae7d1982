package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/internal/backlog"
	"github.com/herald-push/herald/notification"
)

// pollEvery is how often the waiting helpers look at the database.
const pollEvery = 20 * time.Millisecond

// Idle reports whether Herald has nothing left to do in pool's database:
// the relay has consumed every committed outbox message and no delivery is
// open (pending, claimed or retry scheduled). A committed message held back
// by an older open transaction counts as work left. Herald.Idle and
// Herald.WaitIdle ask the same question through a Herald.
func Idle(ctx context.Context, pool *pgxpool.Pool) (bool, error) { return backlog.Idle(ctx, pool) }

// WaitIdle waits until Idle is true, failing the test after timeout.
func WaitIdle(t testing.TB, pool *pgxpool.Pool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		idle, err := Idle(context.Background(), pool)
		if err != nil {
			t.Fatal(err)
		}
		if idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("herald still busy after %s", timeout)
		}
		time.Sleep(pollEvery)
	}
}

// WaitDelivered waits until every delivery of the notification is final
// and returns them. It fails the test if that takes longer than timeout, if
// the notification got no delivery at all, or if any delivery ended other
// than sent.
func WaitDelivered(t testing.TB, pool *pgxpool.Pool, notificationID uuid.UUID, timeout time.Duration) []*notification.Delivery {
	t.Helper()
	repo := adapters.NewPostgresDeliveryRepository(pool)
	deadline := time.Now().Add(timeout)
	for {
		ds, err := repo.ListForNotification(context.Background(), notificationID)
		if err != nil {
			t.Fatal(err)
		}
		final := len(ds) > 0
		for _, d := range ds {
			final = final && d.Status().IsFinal()
		}
		if final {
			for _, d := range ds {
				if d.Status() != notification.StatusSent {
					t.Fatalf("notification %s: delivery %d ended %s (%s)", notificationID, d.ID(), d.Status(), d.LastError())
				}
			}
			return ds
		}
		if time.Now().After(deadline) {
			t.Fatalf("notification %s not delivered after %s: %d deliveries so far", notificationID, timeout, len(ds))
		}
		time.Sleep(pollEvery)
	}
}

// AssertNothingSent checks what a rolled-back transaction promises: once
// Herald is idle, recipient has no notification in the database and fake
// accepted no push for any of the recipient's tokens. Call it after the
// relay and sender have had the chance to run (it waits for them to go
// idle, up to timeout).
func AssertNothingSent(t testing.TB, pool *pgxpool.Pool, fake *FakeFCM, recipient string, timeout time.Duration) {
	t.Helper()
	WaitIdle(t, pool, timeout)
	ctx := context.Background()
	var notifications int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM herald_notifications WHERE recipient = $1`, recipient).Scan(&notifications); err != nil {
		t.Fatal(err)
	}
	if notifications > 0 {
		t.Errorf("recipient %q has %d notification(s); want none", recipient, notifications)
	}
	tokens, err := adapters.NewPostgresDeviceTokenRepository(pool).ListForUser(ctx, recipient, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range tokens {
		if got := fake.AcceptedFor(tok.Token()); len(got) > 0 {
			t.Errorf("recipient %q: %d push(es) accepted for one of their tokens; want none", recipient, len(got))
		}
	}
}
