package adapters_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// Several senders claiming at once for one device share its limit: the
// counts live in Postgres, and the upsert's row lock makes them take turns.
func TestConcurrentClaimsNeverGrantADeviceMoreThanItsLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "phone", notification.PlatformAndroid)
	f.register("bob", "bob-phone", notification.PlatformAndroid)
	for range 60 {
		f.deliver("alice", "", "phone")
		f.deliver("bob", "", "bob-phone")
	}
	repo := f.repo.WithDeviceLimits(adapters.DeviceLimits{PerMinute: 7, PerHour: 100})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		claimed = map[string]int{}
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				ds, err := repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
				assert.NoError(t, err)
				mu.Lock()
				for _, d := range ds {
					claimed[d.Message.Token]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, map[string]int{"phone": 7, "bob-phone": 7}, claimed)
	var waiting int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries
		WHERE status = 'pending' AND error_code = 'DEVICE_RATE' AND due_at >= now() + interval '59 seconds'`).Scan(&waiting))
	assert.Equal(t, 2*(60-7), waiting, "the excess waits for the window to end; nothing is dropped")
}

func TestDeviceLimitsOffCountNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "phone", notification.PlatformAndroid)
	for range 30 {
		f.deliver("alice", "", "phone")
	}
	ds, err := f.repo.ClaimDue(ctx, time.Now(), 50, time.Minute)
	require.NoError(t, err)
	assert.Len(t, ds, 30)
	var rows int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_device_counts`).Scan(&rows))
	assert.Zero(t, rows)
}

// A sender that claimed a push of a user who is then forgotten may still
// push it, but recording its outcome must not bring any row back.
func TestAClaimedPushOfAForgottenUserIsNotRecordedBackIntoExistence(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "alice-phone", notification.PlatformAndroid)
	f.register("bob", "bob-phone", notification.PlatformAndroid)
	f.deliver("alice", "", "alice-phone")
	f.deliver("bob", "", "bob-phone")
	repo := f.repo.WithDeviceLimits(adapters.DeviceLimits{PerMinute: 240, PerHour: 5000})
	ds, err := repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, ds, 2)

	report, err := f.repo.ForgetUser(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, 1, report.Notifications)
	assert.Equal(t, 1, report.Tokens)
	assert.False(t, report.InFlightUntil.IsZero(), "her claimed push may still be on the wire")

	var outcomes []*notification.Delivery
	for _, d := range ds {
		_, err := d.Delivery.RecordFailure(&notification.SendError{Class: notification.ErrTokenUnregistered, Code: "UNREGISTERED"},
			notification.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Second, MaxDelay: time.Minute}, time.Now(), 0.5)
		require.NoError(t, err)
		outcomes = append(outcomes, d.Delivery)
	}
	recorded, err := f.repo.Record(ctx, outcomes)
	require.NoError(t, err)
	assert.Equal(t, 1, recorded, "only bob's outcome")
	// The per-device counts hold no token, only its hash: hers goes,
	// bob's stays.
	for phone, want := range map[string]int{"alice-phone": 0, "bob-phone": 1} {
		var counts int
		require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_device_counts
			WHERE device = hashtextextended($1, 0)`, phone).Scan(&counts))
		assert.Equal(t, want, counts, phone)
	}
	for _, table := range []string{"herald_deliveries", "herald_notifications", "herald_device_tokens", "herald_device_counts"} {
		var n int
		require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` t
			WHERE strpos(row_to_json(t)::text, 'alice') > 0`).Scan(&n))
		assert.Zero(t, n, table)
	}
}
