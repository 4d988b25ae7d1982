package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
)

// The fleet's tables are read by every instance at every heartbeat and
// every grant: a row no Herald would write (an admin script, a restore, a
// clock that jumped) must never stop the fleet's heartbeat, leave it
// leaderless, or freeze its send budget.

// A registration whose DeadAfter or times no Herald could have written is
// judged like any other and never fails the heartbeat of every instance
// (which would fence them all: no push anywhere).
func TestARegistrationNoHeraldWroteNeverStopsTheFleetsHeartbeat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sql string }{
		{"a DeadAfter of 292,000 years", `INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at, dead_after_us)
			VALUES (gen_random_uuid(), 'odd', 1, 'x', now(), now() - interval '1 hour', 9223372036854775807)`},
		{"a DeadAfter longer than the calendar", `INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at, dead_after_us)
			VALUES (gen_random_uuid(), 'odd', 1, 'x', now(), now(), 400000000000000000)`},
		{"a heartbeat at infinity", `INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at)
			VALUES (gen_random_uuid(), 'odd', 1, 'x', 'infinity', 'infinity')`},
		{"a heartbeat at minus infinity", `INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at)
			VALUES (gen_random_uuid(), 'odd', 1, 'x', '-infinity', '-infinity')`},
		{"odd text", `INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at)
			VALUES (gen_random_uuid(), repeat('é', 100000), -1, E'\u2028\t', now(), now())`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newOwnershipFixture(t)
			fleet := adapters.NewPostgresFleetRepository(f.pool)
			_, err := f.pool.Exec(ctx, tc.sql)
			require.NoError(t, err)
			live := instance("live")
			for range 2 {
				res, err := fleet.Beat(ctx, live, 5*time.Second, 5*time.Second)
				require.NoError(t, err, "the heartbeat works")
				assert.True(t, res.Leader)
			}
			list, err := fleet.Instances(ctx, 5*time.Second)
			require.NoError(t, err, "the fleet can be listed")
			assert.NotEmpty(t, list)
		})
	}
}

// The leader's lease is a row anyone can write: a lease held by no
// registered instance, or ending further ahead than any lease a Herald
// takes, never keeps the fleet leaderless (no housekeeping, no walk for
// orphaned claims), and neither does a missing row.
func TestALeaseNoLiveInstanceHoldsNeverLeavesTheFleetLeaderless(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sql string }{
		{"held by an instance that does not exist, for ever", `UPDATE herald_leader SET holder = gen_random_uuid(), expires_at = 'infinity'`},
		{"held by an instance that does not exist, for a year", `UPDATE herald_leader SET holder = gen_random_uuid(), expires_at = now() + interval '1 year'`},
		{"held by nobody, for ever", `UPDATE herald_leader SET holder = NULL, expires_at = 'infinity'`},
		{"held for ever by a registration from the future", `WITH z AS (INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at)
			VALUES (gen_random_uuid(), 'zombie', 1, 'x', now(), 'infinity') RETURNING id)
			UPDATE herald_leader SET holder = (SELECT id FROM z), expires_at = 'infinity'`},
		{"deleted", `DELETE FROM herald_leader`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newOwnershipFixture(t)
			fleet := adapters.NewPostgresFleetRepository(f.pool)
			_, err := f.pool.Exec(ctx, tc.sql)
			require.NoError(t, err)
			a, b := instance("a"), instance("b")
			ra, err := fleet.Beat(ctx, a, 5*time.Second, 5*time.Second)
			require.NoError(t, err)
			rb, err := fleet.Beat(ctx, b, 5*time.Second, 5*time.Second)
			require.NoError(t, err)
			assert.True(t, ra.Leader, "a live instance takes the lease")
			assert.False(t, rb.Leader, "and only one")
			ra, err = fleet.Beat(ctx, a, 5*time.Second, 5*time.Second)
			require.NoError(t, err)
			assert.True(t, ra.Leader, "and keeps it")
		})
	}
}

// A live leader's lease is never taken by another live instance: the
// guards above read the holder's registration, which a live leader keeps.
func TestALiveLeadersLeaseIsNeverTakenByAnotherInstance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	fleet := adapters.NewPostgresFleetRepository(f.pool)
	long, short := instance("long"), instance("short")
	res, err := fleet.Beat(ctx, long, time.Hour, time.Hour)
	require.NoError(t, err)
	require.True(t, res.Leader)
	for range 3 {
		res, err = fleet.Beat(ctx, short, time.Second, time.Second)
		require.NoError(t, err)
		assert.False(t, res.Leader, "a leader with a longer lease than the others' keeps it")
	}
}
