package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// The database's clock can step forward (a VM resumed after a pause or a
// live migration, an NTP step). Postgres's clock cannot be moved from a
// test, but to a reaper a forward jump of J is every heartbeat written
// before it lying J further in the past: jumpDatabaseClock moves them all.
func jumpDatabaseClock(t *testing.T, f *ownershipFixture, by time.Duration) {
	t.Helper()
	_, err := f.pool.Exec(context.Background(),
		`UPDATE herald_instances SET heartbeat_at = heartbeat_at - $1::bigint * interval '1 microsecond'`, by.Microseconds())
	require.NoError(t, err)
}

// A forward jump of the database's clock by more than DeadAfter made the
// first heartbeat after it see every other instance's heartbeat as older
// than DeadAfter: it reaped every live instance and freed their claims,
// which others then pushed again while the live instances still pushed
// them (duplicates), and each live instance registered again with a WARN.
// A live instance beats every second whatever the clock says: it is not
// reaped, and its claims stay its own.
func TestAForwardJumpOfTheDatabaseClockNeverTakesALiveInstanceForDead(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	reaper, live := instance("reaper"), instance("live")
	// One repository each, as each process has its own.
	reapers, lives := adapters.NewPostgresFleetRepository(f.pool), adapters.NewPostgresFleetRepository(f.pool)
	const deadAfter = time.Second
	_, err := reapers.Beat(ctx, reaper, deadAfter, deadAfter)
	require.NoError(t, err)
	_, err = lives.Beat(ctx, live, deadAfter, deadAfter)
	require.NoError(t, err)
	f.register("u1", "tok-live", notification.PlatformAndroid)
	f.deliver("u1", "", "tok-live")
	claimed, err := f.repo.ForInstance(live.ID).ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	_, err = reapers.Beat(ctx, reaper, deadAfter, deadAfter)
	require.NoError(t, err)

	// The clock jumps an hour just before each of the reaper's beats, for
	// three times DeadAfter; live beats as it always does.
	for end := time.Now().Add(3 * deadAfter); time.Now().Before(end); {
		jumpDatabaseClock(t, f, time.Hour)
		res, err := reapers.Beat(ctx, reaper, deadAfter, deadAfter)
		require.NoError(t, err)
		require.Zero(t, res.Reaped, "the reaper took the live instance for dead")
		require.Zero(t, res.Freed, "the reaper freed a live instance's claim")
		res, err = lives.Beat(ctx, live, deadAfter, deadAfter)
		require.NoError(t, err)
		require.False(t, res.Registered, "the live instance was taken for dead and registered again")
		time.Sleep(deadAfter / 5)
	}
	still, err := f.repo.StillClaimed(ctx, claimed[0].Delivery)
	require.NoError(t, err)
	assert.True(t, still, "the live instance's claim is still its own")
}

// A reaper that was itself stopped (SIGSTOP, a long GC pause) for longer
// than DeadAfter must not wake to reap from what it saw before the pause:
// the instance it watched kept beating meanwhile, and a clock jump while
// it slept makes that instance's new heartbeat look old.
func TestAReaperWokenFromAPauseNeverReapsFromWhatItSawBeforeIt(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	reaper, live := instance("reaper"), instance("live")
	reapers, lives := adapters.NewPostgresFleetRepository(f.pool), adapters.NewPostgresFleetRepository(f.pool)
	const deadAfter = time.Second
	for range 2 {
		_, err := reapers.Beat(ctx, reaper, deadAfter, deadAfter)
		require.NoError(t, err)
		_, err = lives.Beat(ctx, live, deadAfter, deadAfter)
		require.NoError(t, err)
	}

	// The reaper sleeps for twice DeadAfter; live beats on.
	for end := time.Now().Add(2 * deadAfter); time.Now().Before(end); time.Sleep(deadAfter / 5) {
		_, err := lives.Beat(ctx, live, deadAfter, deadAfter)
		require.NoError(t, err)
	}
	jumpDatabaseClock(t, f, time.Hour)
	res, err := reapers.Beat(ctx, reaper, deadAfter, deadAfter)
	require.NoError(t, err)
	assert.Zero(t, res.Reaped, "the woken reaper took the live instance for dead")
	res, err = lives.Beat(ctx, live, deadAfter, deadAfter)
	require.NoError(t, err)
	assert.False(t, res.Registered, "the live instance was taken for dead and registered again")
}

// A reaper reaps only what it has watched stand still for DeadAfter, so an
// instance started after another died (the only one left, or the whole
// fleet restarted) takes over the dead one's claims DeadAfter plus a beat or
// two after its own first beat, however long ago the dead one stopped; a
// heartbeat no Herald wrote (minus infinity) is judged alike.
func TestAFreshInstanceTakesOverADeadOnesClaimsWithinDeadAfterOfItsFirstBeat(t *testing.T) {
	t.Parallel()
	for _, heartbeat := range []string{"now() - interval '1 hour'", "'-infinity'"} {
		t.Run(heartbeat, func(t *testing.T) {
			t.Parallel()
			f := newOwnershipFixture(t)
			ctx := context.Background()
			dead, fresh := instance("dead"), instance("fresh")
			_, err := f.pool.Exec(ctx, `INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at, dead_after_us)
				VALUES ($1, 'dead', 1, 'test', now() - interval '2 hours', `+heartbeat+`, 1000000)`, dead.ID)
			require.NoError(t, err)
			f.register("u1", "tok-dead", notification.PlatformAndroid)
			f.deliver("u1", "", "tok-dead")
			claimed, err := f.repo.ForInstance(dead.ID).ClaimDue(ctx, time.Now(), 1, time.Hour)
			require.NoError(t, err)
			require.Len(t, claimed, 1)

			const deadAfter, beat = time.Second, 100 * time.Millisecond
			fleet := adapters.NewPostgresFleetRepository(f.pool)
			start := time.Now()
			for {
				res, err := fleet.Beat(ctx, fresh, deadAfter, deadAfter)
				require.NoError(t, err)
				if res.Reaped > 0 {
					assert.Equal(t, 1, res.Freed, "the dead instance's claim is freed by the beat that reaps it")
					break
				}
				// Generous for a loaded machine: the bound is DeadAfter
				// plus about two beats.
				require.Less(t, time.Since(start), 2*deadAfter, "the dead instance is still registered")
				time.Sleep(beat)
			}
			took := time.Since(start)
			t.Logf("reaped %s after the fresh instance's first beat", took.Round(time.Millisecond))
			assert.GreaterOrEqual(t, took, deadAfter, "reaped before the fresh instance had watched it for DeadAfter")
		})
	}
}

// Every beat reads the registry into the reaper's memory, and sends back
// every instance it saw stand still. Rows no Herald wrote (a restore, a
// script, someone with the database's credentials) that never die by the
// database's clock (a heartbeat at infinity, a DeadAfter of centuries) were
// all read and all sent back at every beat: with 1,000,000 of them a beat
// took 4.4 s, near DeadAfter, past which every live instance fences
// itself. A beat watches at most MaxWatchedInstances, those the database's
// clock takes for dead soonest, so that a real dead instance among the
// flood is still reaped.
func TestARegistryFloodedWithRowsNoHeraldWroteNeverSlowsTheHeartbeatNorHidesADeadOne(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	const deadAfter, beat = time.Second, 100 * time.Millisecond
	reaper, dead := instance("reaper"), instance("dead")
	fleet := adapters.NewPostgresFleetRepository(f.pool)
	_, err := adapters.NewPostgresFleetRepository(f.pool).Beat(ctx, dead, deadAfter, deadAfter)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at, dead_after_us)
		SELECT gen_random_uuid(), 'flood', 1, 'x', now(),
			CASE WHEN n % 2 = 0 THEN 'infinity' ELSE now() - interval '1 hour' END,
			CASE WHEN n % 2 = 0 THEN 1000000 ELSE 9223372036854775807 END
		FROM generate_series(1, 100000) AS n`)
	require.NoError(t, err)

	start := time.Now()
	for {
		res, err := fleet.Beat(ctx, reaper, deadAfter, deadAfter)
		require.NoError(t, err)
		require.LessOrEqual(t, adapters.WatchedInstances(fleet), adapters.MaxWatchedInstances,
			"a beat read the whole flooded registry")
		if res.Reaped > 0 {
			assert.Equal(t, 1, res.Reaped, "only the dead instance is reaped")
			break
		}
		require.Less(t, time.Since(start), 3*deadAfter, "the dead instance hidden among the flood is still registered")
		time.Sleep(beat)
	}
	var left int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_instances WHERE id = $1`, dead.ID).Scan(&left))
	assert.Zero(t, left, "the dead instance was reaped")
}
