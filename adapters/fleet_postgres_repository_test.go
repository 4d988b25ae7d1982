package adapters_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func instance(host string) app.InstanceInfo {
	return app.InstanceInfo{ID: uuid.New(), Host: host, PID: 42, Version: "test"}
}

func TestOneInstanceLeadsAndADeadOnesClaimsComeBackWhileLiveLeasesStay(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	fleet := adapters.NewPostgresFleetRepository(f.pool)
	alive, doomed := instance("alive"), instance("doomed")
	const deadAfter = 2 * time.Second

	first, err := fleet.Beat(ctx, alive, deadAfter, deadAfter)
	require.NoError(t, err)
	second, err := fleet.Beat(ctx, doomed, deadAfter, deadAfter)
	require.NoError(t, err)
	assert.True(t, first.Registered && second.Registered)
	assert.True(t, first.Leader, "the first instance takes the free lease")
	assert.False(t, second.Leader, "only one instance leads")

	f.register("u1", "tok-alive", notification.PlatformAndroid)
	f.register("u2", "tok-doomed", notification.PlatformAndroid)
	f.deliver("u1", "", "tok-alive")
	mine, err := f.repo.ForInstance(alive.ID).ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, mine, 1)
	f.deliver("u2", "", "tok-doomed")
	theirs, err := f.repo.ForInstance(doomed.ID).ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, theirs, 1)

	// doomed stops beating; alive keeps on. The beat that reaps doomed
	// frees its claim in the same statement.
	require.Eventually(t, func() bool {
		res, err := fleet.Beat(ctx, alive, deadAfter, deadAfter)
		require.NoError(t, err)
		if res.Reaped == 0 {
			return false
		}
		assert.Equal(t, 1, res.Reaped)
		assert.Equal(t, 1, res.Freed, "exactly the dead instance's claim is freed")
		assert.Empty(t, res.Dead, "nothing is left for the leader's walk")
		return true
	}, 10*time.Second, 200*time.Millisecond)

	list, err := fleet.Instances(ctx, deadAfter)
	require.NoError(t, err)
	require.Len(t, list, 1, "the dead instance left the list")
	assert.Equal(t, alive.ID, list[0].ID)
	assert.True(t, list[0].Leader)

	taken, err := f.repo.ForInstance(alive.ID).ClaimDue(ctx, time.Now(), 10, time.Hour)
	require.NoError(t, err)
	require.Len(t, taken, 1, "only the dead instance's delivery is claimable again")
	assert.Equal(t, theirs[0].Delivery.ID(), taken[0].Delivery.ID())
	still, err := f.repo.StillClaimed(ctx, mine[0].Delivery)
	require.NoError(t, err)
	assert.True(t, still, "the live instance's lease is untouched")
	stale, err := f.repo.StillClaimed(ctx, theirs[0].Delivery)
	require.NoError(t, err)
	assert.False(t, stale, "the dead instance's claim is no longer current")

	require.NoError(t, fleet.Leave(ctx, alive.ID))
	list, err = fleet.Instances(ctx, deadAfter)
	require.NoError(t, err)
	assert.Empty(t, list, "an instance that leaves is gone at once")
	next, err := fleet.Beat(ctx, doomed, deadAfter, deadAfter)
	require.NoError(t, err)
	assert.True(t, next.Registered, "a revived instance registers again")
	assert.True(t, next.Leader, "the lease given up is free at once")
}

func TestTheSharedBudgetNeverGrantsMoreThanItsRateAcrossConcurrentInstances(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	fleet := adapters.NewPostgresFleetRepository(f.pool)
	const perSecond, capacity = 500.0, 10.0

	// Drain what accrued since the migration.
	_, _, err := fleet.Grant(ctx, 1_000_000, perSecond, capacity)
	require.NoError(t, err)
	start := time.Now()
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < time.Second {
				got, _, err := fleet.Grant(ctx, 5, perSecond, capacity)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				total += got
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	assert.LessOrEqual(t, float64(total), perSecond*elapsed+capacity, "granted %d in %.2fs", total, elapsed)
	assert.Greater(t, float64(total), perSecond*elapsed*0.8, "the budget is used: granted %d in %.2fs", total, elapsed)

	require.NoError(t, fleet.PauseAll(ctx, 3*time.Second))
	_, pause, err := fleet.Grant(ctx, 0, perSecond, capacity)
	require.NoError(t, err)
	assert.InDelta(t, 3*time.Second, pause, float64(500*time.Millisecond), "every instance reads the pause")
	require.NoError(t, fleet.PauseAll(ctx, time.Second))
	_, pause, err = fleet.Grant(ctx, 0, perSecond, capacity)
	require.NoError(t, err)
	assert.Greater(t, pause, 2*time.Second, "a shorter pause never cuts a longer one")
}

// An instance the leader found dead may beat again (a long GC pause, a
// stalled host) before the leader frees its claims: it registers again under
// the same id and claims afresh. Its new claims belong to a live instance
// and must keep their lease, or another instance pushes them too.
func TestALiveInstancesClaimsAreNeverFreedEvenIfItWasFoundDeadAMomentBefore(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	fleet := adapters.NewPostgresFleetRepository(f.pool)
	leader, stalled := instance("leader"), instance("stalled")
	const deadAfter = time.Second

	_, err := fleet.Beat(ctx, leader, deadAfter, deadAfter)
	require.NoError(t, err)
	_, err = fleet.Beat(ctx, stalled, deadAfter, deadAfter)
	require.NoError(t, err)

	// stalled stops beating until the leader's beat deletes it.
	require.Eventually(t, func() bool {
		res, err := fleet.Beat(ctx, leader, deadAfter, deadAfter)
		require.NoError(t, err)
		return res.Reaped == 1
	}, 10*time.Second, 100*time.Millisecond)

	// stalled wakes up, beats (registering again under its id) and claims.
	res, err := fleet.Beat(ctx, stalled, deadAfter, deadAfter)
	require.NoError(t, err)
	require.True(t, res.Registered, "it registers again")
	f.register("u1", "tok-stalled", notification.PlatformAndroid)
	f.deliver("u1", "", "tok-stalled")
	claimed, err := f.repo.ForInstance(stalled.ID).ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, claimed, 1)

	// The leader, slow, now frees the claims of the instance its beat found
	// dead a moment before.
	n, err := fleet.FreeClaimsOf(ctx, []uuid.UUID{stalled.ID})
	require.NoError(t, err)
	assert.Zero(t, n, "a registered instance's claims are not freed")
	still, err := f.repo.StillClaimed(ctx, claimed[0].Delivery)
	require.NoError(t, err)
	assert.True(t, still, "the live instance's lease is untouched")
}

// During a rolling upgrade, processes of a Herald without migration 0007
// claim without writing claimed_by. A killed instance's claim that such a
// process takes afresh is that live process's claim: the leader must not
// free it again, or it is pushed twice.
func TestAClaimTakenAfreshByAnOlderHeraldIsNotFreedAgainDuringARollingUpgrade(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	fleet := adapters.NewPostgresFleetRepository(f.pool)
	leader, killed := instance("leader"), instance("killed")
	const deadAfter = time.Second
	_, err := fleet.Beat(ctx, leader, deadAfter, deadAfter)
	require.NoError(t, err)
	_, err = fleet.Beat(ctx, killed, deadAfter, deadAfter)
	require.NoError(t, err)
	f.register("u1", "tok-killed", notification.PlatformAndroid)
	f.deliver("u1", "", "tok-killed")
	claimed, err := f.repo.ForInstance(killed.ID).ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, claimed, 1)

	// killed dies; the beat that reaps it frees its claim.
	require.Eventually(t, func() bool {
		res, err := fleet.Beat(ctx, leader, deadAfter, deadAfter)
		require.NoError(t, err)
		if res.Reaped == 0 {
			return false
		}
		assert.Equal(t, 1, res.Freed)
		return true
	}, 10*time.Second, 100*time.Millisecond)

	// An older Herald claims it afresh with its own statement, which knows
	// nothing of claimed_by.
	tag, err := f.pool.Exec(ctx, `UPDATE herald_deliveries SET claim_id = $1,
		due_at = now() + interval '1 hour', updated_at = now()
		WHERE status = 'claimed' AND due_at <= now()`, uuid.New())
	require.NoError(t, err)
	require.EqualValues(t, 1, tag.RowsAffected())

	// A new leader walks the claimed rows at once: the claim has no
	// holder, so it is nobody's to free.
	res, err := adapters.NewPostgresFleetRepository(f.pool).Beat(ctx, leader, deadAfter, deadAfter)
	require.NoError(t, err)
	assert.Empty(t, res.Dead)
	n, err := fleet.FreeClaimsOf(ctx, []uuid.UUID{killed.ID})
	require.NoError(t, err)
	assert.Zero(t, n, "the older Herald's live claim keeps its lease")
}

// A claim whose holder left the registry without being reaped (its row
// deleted by hand, or by a Herald older than the reaping statement) is
// found by the leader's walk, which runs at its first beat and then from
// time to time, and freed.
func TestTheLeadersWalkFindsClaimsOfAnInstanceThatLeftTheRegistryUnreaped(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	leader, gone := instance("leader"), instance("gone")
	const deadAfter = time.Hour
	// gone leads for a millisecond only, so leader takes the lease below.
	_, err := adapters.NewPostgresFleetRepository(f.pool).Beat(ctx, gone, time.Millisecond, deadAfter)
	require.NoError(t, err)
	f.register("u1", "tok-gone", notification.PlatformAndroid)
	f.deliver("u1", "", "tok-gone")
	claimed, err := f.repo.ForInstance(gone.ID).ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	_, err = f.pool.Exec(ctx, `DELETE FROM herald_instances WHERE id = $1`, gone.ID)
	require.NoError(t, err)

	fleet := adapters.NewPostgresFleetRepository(f.pool)
	res, err := fleet.Beat(ctx, leader, deadAfter, deadAfter)
	require.NoError(t, err)
	require.True(t, res.Leader)
	assert.Equal(t, []uuid.UUID{gone.ID}, res.Dead)
	n, err := fleet.FreeClaimsOf(ctx, res.Dead)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	again, err := fleet.Beat(ctx, leader, deadAfter, deadAfter)
	require.NoError(t, err)
	assert.Empty(t, again.Dead, "the walk runs from time to time, not at every beat")
}

// Each instance is judged dead by the DeadAfter it registered: one
// configured to beat slowly (DeadAfter 3 s here) is not taken for dead
// between its beats by one configured with 1 s, and its claims stay its
// own; it still leaves the list and gives its claims back once its own
// DeadAfter has passed.
func TestAnInstanceIsJudgedDeadByItsOwnDeadAfterNotByTheReapers(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	fleet := adapters.NewPostgresFleetRepository(f.pool)
	quick, slow := instance("quick"), instance("slow")
	const slowDeadAfter = 3 * time.Second
	_, err := fleet.Beat(ctx, slow, slowDeadAfter, slowDeadAfter)
	require.NoError(t, err)
	f.register("u1", "tok-slow", notification.PlatformAndroid)
	f.deliver("u1", "", "tok-slow")
	claimed, err := f.repo.ForInstance(slow.ID).ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, claimed, 1)

	// Twice quick's DeadAfter, within slow's.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		res, err := fleet.Beat(ctx, quick, time.Second, time.Second)
		require.NoError(t, err)
		require.Zero(t, res.Reaped, "slow is alive by its own DeadAfter")
		require.Zero(t, res.Freed)
	}
	list, err := fleet.Instances(ctx, time.Second)
	require.NoError(t, err)
	assert.Len(t, list, 2, "both are listed as live")
	still, err := f.repo.StillClaimed(ctx, claimed[0].Delivery)
	require.NoError(t, err)
	assert.True(t, still, "slow's claim is untouched")

	// slow's own DeadAfter passes.
	require.Eventually(t, func() bool {
		res, err := fleet.Beat(ctx, quick, time.Second, time.Second)
		require.NoError(t, err)
		if res.Reaped == 0 {
			return false
		}
		assert.Equal(t, 1, res.Reaped)
		assert.Equal(t, 1, res.Freed, "its claim is freed by the beat that reaps it")
		return true
	}, 5*time.Second, 100*time.Millisecond)
}

// An instance registered by a Herald older than migration 0012 has no
// DeadAfter of its own: it is judged by the reaper's, as before.
func TestAnInstanceRegisteredWithoutItsOwnDeadAfterIsJudgedByTheReapers(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	fleet := adapters.NewPostgresFleetRepository(f.pool)
	old := instance("old")
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_instances (id, host, pid, version, started_at, heartbeat_at)
		VALUES ($1, 'old', 1, 'v0', now() - interval '1 minute', now() - interval '10 seconds')`, old.ID)
	require.NoError(t, err)
	// The reaper watches the old heartbeat stand still for its own
	// DeadAfter (1 s) before it reaps.
	reaper := instance("new")
	require.Eventually(t, func() bool {
		res, err := fleet.Beat(ctx, reaper, time.Second, time.Second)
		require.NoError(t, err)
		return res.Reaped == 1
	}, 5*time.Second, 100*time.Millisecond)
}

// Every instance reaps at every beat, and nearly always nobody is dead:
// such a beat must not read the claimed rows. With the dead instances'
// claims picked by claimed_by = ANY (ARRAY(SELECT ...)), the planner, blind
// to the array, walked the due index past every leased row at every beat
// when leased rows were most of the open ones.
func TestABeatThatFindsNobodyDeadReadsNoClaimedRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	// A fleet of three, busy: 30,000 leased rows, nothing else open.
	fleet := adapters.NewPostgresFleetRepository(pool)
	live := []uuid.UUID{}
	for range 3 {
		in := instance("live")
		_, err := fleet.Beat(ctx, in, time.Minute, time.Minute)
		require.NoError(t, err)
		live = append(live, in.ID)
	}
	_, err := pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES ('00000000-0000-0000-0000-000000000001', 'u', 'test', 'x', now())`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `
		INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at, claim_id, claimed_by)
		SELECT '00000000-0000-0000-0000-000000000001', 'tok-' || g, CASE WHEN g % 10 = 0 THEN 'claimed' ELSE 'sent' END,
			now() + interval '1 minute', now(), now(),
			CASE WHEN g % 10 = 0 THEN gen_random_uuid() END, CASE WHEN g % 10 = 0 THEN ($1::uuid[])[g % 3 + 1] END
		FROM generate_series(1, 300000) g`, live)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `ANALYZE herald_deliveries, herald_instances`)
	require.NoError(t, err)
	var ids []uuid.UUID
	var beats []time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT array_agg(id), array_agg(heartbeat_at) FROM herald_instances`).Scan(&ids, &beats))
	require.Len(t, ids, 3)

	for _, mode := range []string{"auto", "force_generic_plan"} {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `SELECT set_config('plan_cache_mode', $1, true)`, mode)
		require.NoError(t, err)
		var raw []byte
		// Every live instance is a candidate, as after a reaper has
		// watched them for DeadAfter: their heartbeats are recent.
		require.NoError(t, tx.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+adapters.ReapSQL,
			time.Minute.Microseconds(), "herald_test_channel", ids, beats).Scan(&raw))
		require.NoError(t, tx.Rollback(ctx))
		var plan []struct {
			Plan struct {
				SharedHitBlocks  int64 `json:"Shared Hit Blocks"`
				SharedReadBlocks int64 `json:"Shared Read Blocks"`
			} `json:"Plan"`
		}
		require.NoError(t, json.Unmarshal(raw, &plan))
		require.Len(t, plan, 1)
		// Reading the 30,000 leased rows costs thousands of pages (4,426
		// with the ANY form); a beat that joins no reaped row reads none.
		blocks := plan[0].Plan.SharedHitBlocks + plan[0].Plan.SharedReadBlocks
		assert.Less(t, blocks, int64(20), "%s: pages read by a beat that reaps nobody:\n%s", mode, raw)
	}
}

// The leader walks the claimed rows for unregistered holders at its first
// beat as the leader. A follower's beats walked too (finding nothing, as
// the walk is the leader's) and each reset the 30 s timer, so a follower
// that became the leader waited up to 30 s for its first walk.
func TestANewLeaderWalksAtItsFirstBeatAsLeaderEvenIfItWalkedAsAFollower(t *testing.T) {
	t.Parallel()
	f := newOwnershipFixture(t)
	ctx := context.Background()
	first, second, gone := instance("first"), instance("second"), instance("gone")
	const deadAfter = time.Hour
	firsts, seconds := adapters.NewPostgresFleetRepository(f.pool), adapters.NewPostgresFleetRepository(f.pool)
	res, err := firsts.Beat(ctx, first, deadAfter, deadAfter)
	require.NoError(t, err)
	require.True(t, res.Leader)
	res, err = seconds.Beat(ctx, second, deadAfter, deadAfter)
	require.NoError(t, err)
	require.False(t, res.Leader, "second follows")

	// gone claims, then leaves the registry without being reaped.
	f.register("u1", "tok-gone", notification.PlatformAndroid)
	f.deliver("u1", "", "tok-gone")
	claimed, err := f.repo.ForInstance(gone.ID).ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, claimed, 1)

	// first leaves; second leads from its next beat, and walks at once.
	require.NoError(t, firsts.Leave(ctx, first.ID))
	res, err = seconds.Beat(ctx, second, deadAfter, deadAfter)
	require.NoError(t, err)
	require.True(t, res.Leader)
	assert.Equal(t, []uuid.UUID{gone.ID}, res.Dead, "the new leader's first beat walks the claimed rows")
}
