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

// The limits count pushes: a push the sender gives back without making it
// (its device held after a 429, its platform paused) frees its place in the
// window it was counted in, and only there.
func TestAPushGivenBackUnpushedFreesItsPlaceInTheDevicesWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "phone", notification.PlatformAndroid)
	for range 12 {
		f.deliver("alice", "", "phone")
	}
	repo := f.repo.WithDeviceLimits(adapters.DeviceLimits{PerMinute: 5, PerHour: 100})
	counts := func() (minute, hour int) {
		t.Helper()
		require.NoError(t, f.pool.QueryRow(ctx, `SELECT minute_count, hour_count FROM herald_device_counts
			WHERE device = hashtextextended('phone', 0)`).Scan(&minute, &hour))
		return minute, hour
	}
	giveBack := func(ds []app.Dispatch) {
		t.Helper()
		var outcomes []*notification.Delivery
		for _, d := range ds {
			require.NoError(t, d.Delivery.Release(time.Now(), time.Now()))
			outcomes = append(outcomes, d.Delivery)
		}
		recorded, err := repo.Record(ctx, outcomes)
		require.NoError(t, err)
		require.Equal(t, len(ds), recorded)
	}

	ds, err := repo.ClaimDue(ctx, time.Now(), 20, time.Minute)
	require.NoError(t, err)
	require.Len(t, ds, 5, "the device's limit")
	// One is pushed; four are given back unpushed.
	_, err = ds[0].Delivery.RecordFailure(&notification.SendError{Class: notification.ErrQuotaExceeded, Code: "QUOTA_EXCEEDED"},
		notification.RetryPolicy{MaxAttempts: 3, BaseDelay: time.Minute, MaxDelay: time.Hour}, time.Now(), 0)
	require.NoError(t, err)
	_, err = repo.Record(ctx, []*notification.Delivery{ds[0].Delivery})
	require.NoError(t, err)
	giveBack(ds[1:])
	minute, hour := counts()
	assert.Equal(t, 1, minute, "only the push made counts in the minute")
	assert.Equal(t, 1, hour, "and in the hour")
	// Their places are free: the four given back (due now) go again in
	// this window, with the first of the others.
	_, err = f.pool.Exec(ctx, `UPDATE herald_deliveries SET error_code = '', due_at = now() WHERE status = 'pending'`)
	require.NoError(t, err)
	again, err := repo.ClaimDue(ctx, time.Now(), 20, time.Minute)
	require.NoError(t, err)
	assert.Len(t, again, 4, "the window's four free places")

	// A push given back after its window ended (here: moved into the
	// past) frees no place in the next one.
	_, err = f.pool.Exec(ctx, `UPDATE herald_device_counts SET minute_start = minute_start - interval '61 seconds'`)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `UPDATE herald_deliveries SET due_at = now() WHERE status IN ('pending', 'retry_scheduled')`)
	require.NoError(t, err)
	next, err := repo.ClaimDue(ctx, time.Now(), 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, next, 1, "a new window")
	minuteBefore, _ := counts()
	giveBack(again)
	minute, _ = counts()
	assert.Equal(t, minuteBefore, minute, "the new window keeps its count")
}

// A push the fleet freed from an instance it took for dead (claim kept, its
// lease ended) and that instance then gives back unpushed frees no place in
// a window its claim was not counted in: the freeing rewrote the row's time,
// so the window it was counted in is no longer known.
func TestAPushGivenBackAfterTheFleetFreedItsClaimFreesNoPlaceInALaterWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "phone", notification.PlatformAndroid)
	first := f.deliver("alice", "", "phone")
	f.deliver("alice", "", "phone")
	limits := adapters.DeviceLimits{PerMinute: 1, PerHour: 100}
	stalled, live := uuid.New(), uuid.New()
	repoStalled := f.repo.ForInstance(stalled).WithDeviceLimits(limits)
	repoLive := f.repo.ForInstance(live).WithDeviceLimits(limits)

	ds, err := repoStalled.ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.Equal(t, first, ds[0].Delivery.ID())
	// A minute passes: the stalled instance's window ends, and the live
	// one's claim of the device's other push starts the next.
	_, err = f.pool.Exec(ctx, `UPDATE herald_device_counts SET minute_start = minute_start - interval '61 seconds',
		hour_start = hour_start - interval '61 seconds'`)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `UPDATE herald_deliveries SET updated_at = updated_at - interval '61 seconds' WHERE id = $1`, first)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `UPDATE herald_deliveries SET error_code = '', due_at = now() WHERE status = 'pending'`)
	require.NoError(t, err)
	other, err := repoLive.ClaimDue(ctx, time.Now(), 1, time.Hour)
	require.NoError(t, err)
	require.Len(t, other, 1, "the new window's one place")
	// The fleet frees the stalled instance's claim; before anyone claims it
	// afresh, the stalled instance wakes and gives its push back.
	freed, err := adapters.NewPostgresFleetRepository(f.pool).FreeClaimsOf(ctx, []uuid.UUID{stalled})
	require.NoError(t, err)
	require.Equal(t, 1, freed)
	require.NoError(t, ds[0].Delivery.Release(time.Now(), time.Now()))
	_, err = repoStalled.Record(ctx, []*notification.Delivery{ds[0].Delivery})
	require.NoError(t, err)

	var minute int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT minute_count FROM herald_device_counts
		WHERE device = hashtextextended('phone', 0)`).Scan(&minute))
	assert.Equal(t, 1, minute, "the new window keeps the push it counted")
	// So the device gets no second push in it.
	_, err = f.pool.Exec(ctx, `UPDATE herald_deliveries SET error_code = '', due_at = now() WHERE status = 'pending'`)
	require.NoError(t, err)
	again, err := repoLive.ClaimDue(ctx, time.Now(), 5, time.Hour)
	require.NoError(t, err)
	assert.Empty(t, again, "the device's limit in this window")
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

// A claim's per-device grants are built once per claim, whatever the
// planner believes about the tables. Inlined into the final join, they were
// put on the inner side of a nested loop on a table analysed while empty and
// rebuilt for every claimed row: 500 aggregates of 500 rows, 245 ms for a
// claim of 500 instead of 13.
func TestAClaimBuildsItsPerDeviceGrantsOnceWhateverThePlannerBelieves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	// Statistics that say the deliveries table is empty, as after a
	// deploy on a fresh database or a TRUNCATE, then a burst.
	_, err := pool.Exec(ctx, `ANALYZE herald_deliveries, herald_device_counts`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `
		INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT 'tok-' || g, 'user-' || g, 'android', now(), now() FROM generate_series(1, 500) g;
		INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		SELECT gen_random_uuid(), 'user-' || g, 'test', 'hello', now() FROM generate_series(1, 500) g;
		INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT n.id, 'tok-' || substr(n.recipient, 6), 'pending', now(), now(), now() FROM herald_notifications n`)
	require.NoError(t, err)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // the claim is only explained
	// The claim's own session settings (claimOnce).
	_, err = tx.Exec(ctx, `SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)`)
	require.NoError(t, err)
	var raw []byte
	require.NoError(t, tx.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+adapters.ClaimSQL,
		500, time.Minute.Microseconds(), uuid.New(), uuid.New(), 240, 5000).Scan(&raw))
	type node struct {
		NodeType    string  `json:"Node Type"`
		ActualLoops float64 `json:"Actual Loops"`
		ActualRows  float64 `json:"Actual Rows"`
		Plans       []node  `json:"Plans"`
	}
	var plan []struct {
		Plan node `json:"Plan"`
	}
	require.NoError(t, json.Unmarshal(raw, &plan))
	require.Len(t, plan, 1)
	require.EqualValues(t, 500, plan[0].Plan.ActualRows, "the claim took every due delivery")
	var walk func(n node)
	walk = func(n node) {
		if n.NodeType == "Aggregate" {
			assert.LessOrEqual(t, n.ActualLoops, 1.0, "an aggregate ran once per claimed row:\n%s", raw)
		}
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(plan[0].Plan)
}
