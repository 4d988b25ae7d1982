package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// One claim takes the due deliveries of many users: a row that Raise or Set
// would never have written, put into the tables by hand (an admin script, a
// restore, a zone the server's database has since lost), must cost its own
// delivery at most, never the claim of every other one. Before, each of
// these failed the claim statement or its reading, every time: nothing was
// sent to anyone, for good.
func TestARowWrittenAroundHeraldNeverStopsTheClaimOfOtherDeliveries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, sql string
		failed    bool // the bad delivery fails for good: no push can be made of its row
	}{
		{"data that is not strings", `UPDATE herald_notifications SET data = '{"n": 1}' WHERE id = $1`, true},
		{"data that is not an object", `UPDATE herald_notifications SET data = '[1, 2]' WHERE id = $1`, true},
		{"a badge option that is not a boolean", `UPDATE herald_notifications SET options = '{"apns": {"badge_unread": "yes"}}' WHERE id = $1`, false},
		{"options that do not decode", `UPDATE herald_notifications SET options = '{"apns": {"sound": 7}}' WHERE id = $1`, true},
		{"quiet hours in a zone the server does not know", `INSERT INTO herald_preferences (user_id, quiet_start, quiet_end, time_zone, updated_at)
			SELECT recipient, '00:00', '23:59', 'Mars/Olympus_Mons', now() FROM herald_notifications WHERE id = $1`, false},
		// Postgres's infinite timestamps: "never expires", "sent long ago".
		{"an expiry of infinity", `UPDATE herald_notifications SET expires_at = 'infinity' WHERE id = $1`, false},
		{"an expiry of minus infinity", `UPDATE herald_notifications SET expires_at = '-infinity' WHERE id = $1`, false},
		{"a send time of infinity", `UPDATE herald_notifications SET send_at = 'infinity' WHERE id = $1`, false},
		{"a send time of minus infinity", `UPDATE herald_notifications SET send_at = '-infinity' WHERE id = $1`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newOwnershipFixture(t)
			f.register("mallory", "mallory-phone", notification.PlatformIOS)
			f.register("alice", "alice-phone", notification.PlatformAndroid)
			bad := f.deliver("mallory", "", "mallory-phone")
			var notificationID string
			require.NoError(t, f.pool.QueryRow(ctx, `SELECT notification_id::text FROM herald_deliveries WHERE id = $1`, bad).Scan(&notificationID))
			_, err := f.pool.Exec(ctx, tc.sql, notificationID)
			require.NoError(t, err)
			time.Sleep(5 * time.Millisecond) // alice's comes due after the bad one
			good := f.deliver("alice", "", "alice-phone")

			claimed, err := f.repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
			require.NoError(t, err)
			var ids []int64
			for _, d := range claimed {
				ids = append(ids, d.Delivery.ID())
			}
			assert.Contains(t, ids, good, "alice's delivery is claimed")
			// The bad one is either pushed as well as it can be or closed;
			// it never stays claimed with nobody pushing it.
			status, code := f.delivery(bad)
			if tc.failed {
				assert.NotContains(t, ids, bad)
				assert.Equal(t, notification.StatusFailed, status)
				assert.Equal(t, "MALFORMED_NOTIFICATION", code)
			} else if !containsID(ids, bad) {
				assert.NotEqual(t, notification.StatusClaimed, status, "the bad delivery is claimed and will never be pushed (%s)", code)
			}
		})
	}
}

func containsID(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// An expiry centuries ahead (Raise takes one up to the end of the year
// 9999), or Postgres's infinity written by hand, never expires a push at
// its claim: the time left was read into a time.Duration, which holds 292
// years, and wrapped around to a time in the past, so the sender closed
// the delivery expired without pushing it.
func TestAnExpiryCenturiesAheadNeverExpiresThePushAtItsClaim(t *testing.T) {
	t.Parallel()
	for _, expiry := range []string{"2400-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00", "infinity"} {
		t.Run(expiry, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newOwnershipFixture(t)
			f.register("alice", "alice-phone", notification.PlatformAndroid)
			id := f.deliver("alice", "", "alice-phone")
			_, err := f.pool.Exec(ctx, `UPDATE herald_notifications n SET expires_at = $2::timestamptz
				FROM herald_deliveries d WHERE d.id = $1 AND n.id = d.notification_id`, id, expiry)
			require.NoError(t, err)

			now := time.Now()
			claimed, err := f.repo.ClaimDue(ctx, now, 10, time.Minute)
			require.NoError(t, err)
			require.Len(t, claimed, 1)
			d := claimed[0]
			assert.Equal(t, id, d.Delivery.ID())
			if !d.ExpiresAt.IsZero() {
				assert.True(t, d.ExpiresAt.After(now.AddDate(200, 0, 0)), "expires at %s", d.ExpiresAt)
			}
			if !d.Message.ExpiresAt.IsZero() {
				assert.True(t, d.Message.ExpiresAt.After(now.AddDate(200, 0, 0)), "message expires at %s", d.Message.ExpiresAt)
			}
			assert.False(t, d.Message.Expired(now.Add(time.Hour)))
		})
	}
}

// herald_quiet_until answers in any plan, a parallel one included (a host's
// report over its users' preferences, a server whose planner picks
// parallel plans): its exception block starts a subtransaction, which
// Postgres refuses in a parallel operation, so it was declared parallel
// safe wrongly and failed every such query, for a valid zone too.
func TestQuietHoursAreComputedUnderAParallelPlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	// debug_parallel_query since Postgres 16, force_parallel_mode before.
	var set int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(set_config(name, 'on', false)) FROM pg_settings
		WHERE name IN ('debug_parallel_query', 'force_parallel_mode')`).Scan(&set))
	require.Equal(t, 1, set)
	for _, zone := range []string{"Europe/Berlin", "Mars/Olympus_Mons"} {
		var until time.Time
		err := conn.QueryRow(ctx, `SELECT herald_quiet_until('2026-06-01 12:00:00+00', $1, '00:00', '23:59')`, zone).Scan(&until)
		assert.NoError(t, err, zone)
	}
}
