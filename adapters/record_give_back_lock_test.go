package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// A record that gives back a push's count while it prunes a dead token
// closes that token's other open pushes too. A claim holds its deliveries
// while it takes its devices' counts in device order: the record must take
// no delivery's lock once it holds a count, or a claim holding one of the
// dead token's other pushes, and waiting for the count the record holds,
// deadlocks with it, and Postgres fails one of them.
func TestARecordGivingBackAPushNeverDeadlocksAClaimOfADeadTokensOtherPush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newLockOrderFixture(t, "10ms")
	limits := adapters.DeviceLimits{PerMinute: 1000, PerHour: 10000}
	// x's push is given back unpushed, y's token is found dead; z's device
	// comes before x's in device order.
	const x, y = "x-phone", "y-phone"
	var z string
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT s FROM (SELECT 'z-phone-' || g AS s FROM generate_series(1, 200) g) s
		WHERE hashtextextended(s, 0) < hashtextextended($1, 0) LIMIT 1`, x).Scan(&z))
	f.registerAll(t, []string{x, y, z}, "u")
	f.deliverAll(t, "u", []string{x, y}, true)
	first, err := f.repo.WithDeviceLimits(limits).ClaimDue(ctx, time.Now(), 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, first, 2)
	var outcomes []*notification.Delivery
	for _, c := range first {
		if c.Delivery.Token() == x {
			require.NoError(t, c.Delivery.Release(time.Now(), time.Now()))
		} else {
			_, err := c.Delivery.RecordFailure(&notification.SendError{Class: notification.ErrTokenUnregistered,
				Code: "UNREGISTERED", Reason: "gone"}, notification.RetryPolicy{MaxAttempts: 3}, time.Now(), 0)
			require.NoError(t, err)
		}
		outcomes = append(outcomes, c.Delivery)
	}
	f.deliverAll(t, "u", []string{x, y, z}, true)
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_device_counts (device, minute_start, minute_count, hour_start, hour_count, granted)
		VALUES (hashtextextended($1, 0), now(), 1, now(), 1, 1)`, z)
	require.NoError(t, err)

	// Another claim holds z's count a moment: the claim below holds its
	// three pushes, y's among them, and waits for it.
	other, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer other.Rollback(ctx) //nolint:errcheck // test
	_, err = other.Exec(ctx, `SELECT 1 FROM herald_device_counts WHERE device = hashtextextended($1, 0) FOR UPDATE`, z)
	require.NoError(t, err)
	claimed := make(chan error, 1)
	go func() {
		claimed <- f.inTx(ctx, func(db adapters.DB) error {
			_, err := adapters.NewPostgresDeliveryRepository(db).WithDeviceLimits(limits).ClaimDue(ctx, time.Now(), 10, time.Minute)
			return err
		})
	}()
	waitForWaiters(t, f.pool, `%WITH locked AS%`)
	// The record runs meanwhile, and waits for y's other push.
	recorded := make(chan error, 1)
	go func() {
		recorded <- f.inTx(ctx, func(db adapters.DB) error {
			_, err := adapters.NewPostgresDeliveryRepository(db).WithDeviceLimits(limits).Record(ctx, outcomes)
			return err
		})
	}()
	waitForWaiters(t, f.pool, `%WITH outcome AS%`)
	require.NoError(t, other.Commit(ctx))

	require.NoError(t, <-claimed, "the claim")
	require.NoError(t, <-recorded, "the record")
}
