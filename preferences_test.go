package herald_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// Alert is a host event for one user; an urgent one bypasses quiet hours.
type Alert struct {
	User   string `json:"user"`
	Kind   string `json:"kind"`
	Text   string `json:"text"`
	Urgent bool   `json:"urgent"`
}

func (Alert) EventType() string { return "alert" }

func alertRule(a Alert) ([]notification.Draft, error) {
	kind := a.Kind
	if kind == "" {
		kind = "alert"
	}
	return []notification.Draft{{Recipient: a.User, Type: kind, Urgent: a.Urgent,
		Content: notification.Content{Title: "Alert", Body: a.Text}}}, nil
}

// movableClock is one clock for Herald and its database, moved together:
// the database's now() is shadowed, for this test's connections, by a
// function in schema fakeclock (searched before pg_catalog) that adds the
// same skew as Herald's Config.Now.
type movableClock struct {
	pool *pgxpool.Pool
	skew atomic.Int64
}

func (c *movableClock) Now() time.Time { return time.Now().Add(time.Duration(c.skew.Load())) }

// set moves both clocks so that it is now at.
func (c *movableClock) set(t *testing.T, at time.Time) {
	t.Helper()
	skew := time.Until(at)
	c.skew.Store(int64(skew))
	_, err := c.pool.Exec(context.Background(), `UPDATE fakeclock.skew SET d = $1::bigint * interval '1 microsecond' WHERE id = 1`,
		skew.Microseconds())
	require.NoError(t, err)
}

// newClockedHarness is a harness whose clocks (Go's and the database's)
// the test moves, with the Alert rule.
func newClockedHarness(t *testing.T, cfg herald.Config) (*harness, *movableClock) {
	t.Helper()
	ctx := context.Background()
	url := testutil.NewDatabase(t)
	setup, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	_, err = setup.Exec(ctx, `
		CREATE SCHEMA fakeclock;
		CREATE TABLE fakeclock.skew (id int PRIMARY KEY, d interval NOT NULL);
		INSERT INTO fakeclock.skew VALUES (1, '0');
		-- By its key: the claim turns sequential scans off, and a disabled
		-- plan's cost would set JIT compiling every statement.
		CREATE FUNCTION fakeclock.now() RETURNS timestamptz LANGUAGE sql STABLE
			AS 'SELECT pg_catalog.now() + (SELECT d FROM fakeclock.skew WHERE id = 1)';`)
	setup.Close()
	require.NoError(t, err)
	pcfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	pcfg.MaxConns = 10
	pcfg.ConnConfig.RuntimeParams["search_path"] = "fakeclock, public, pg_catalog"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	clock := &movableClock{pool: pool}
	cfg.Now = clock.Now
	// The tests move the clocks by minutes or hours; an instance whose
	// heartbeat then looks that old would be fenced off (and its claims
	// taken back) until its next beat.
	cfg.Fleet.DeadAfter = 24 * time.Hour
	// A claim reads Go's clock for its lease end before its statement
	// reads the database's; a move between the two makes its deliveries
	// look near their lease end, so they are given back unpushed. That is
	// safe, but a given-back push still counts against its device's
	// per-minute limit, and then waits for the next window (seen in CI).
	// A push is given back once less than half its lease is left: a lease
	// of more than twice any move keeps the tests about what they test.
	cfg.Sender.Lease = 24 * time.Hour
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, alertRule))
	require.NoError(t, notification.On(rules, func(e Notify) ([]notification.Draft, error) {
		return []notification.Draft{e.Draft}, nil
	}))
	h, err := herald.New(pool, client, rules, cfg)
	require.NoError(t, err)
	return &harness{t: t, pool: pool, fake: fake, herald: h}, clock
}

func seoul(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Asia/Seoul")
	require.NoError(t, err)
	return loc
}

func TestQuietHoursInSeoulHoldAPushUntil7AMSeoulTimeWhileAnUrgentOneGoesAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, clock := newClockedHarness(t, fastConfig())
	// 06:59:57 in Seoul: three seconds of quiet hours left.
	sevenAM := time.Date(2026, 12, 1, 7, 0, 0, 0, seoul(t))
	clock.set(t, sevenAM.Add(-3*time.Second))
	require.NoError(t, h.herald.Preferences().Set(ctx, "minji", herald.Preferences{
		QuietHours: herald.QuietHours{Start: "22:00", End: "07:00"}, TimeZone: "Asia/Seoul",
	}))
	require.NoError(t, h.herald.Tokens().Register(ctx, "minji", "minji-phone", notification.PlatformAndroid))
	require.NoError(t, h.herald.Tokens().Register(ctx, "minji", "minji-tablet", notification.PlatformAndroid))
	h.run()
	quiet := h.raise(true, Alert{User: "minji", Text: "your weekly summary"})[0]
	urgent := h.raise(true, Alert{User: "minji", Text: "new sign-in", Urgent: true})[0]

	testutil.WaitDelivered(t, h.pool, urgent.ID(), 10*time.Second)
	for _, r := range h.fake.Accepted() {
		assert.Equal(t, "new sign-in", r.Body, "only the urgent push goes out during quiet hours")
		assert.True(t, r.At.Add(time.Duration(clock.skew.Load())).Before(sevenAM), "the urgent push went at once")
	}
	ds, err := h.herald.ListDeliveries(ctx, quiet.ID())
	require.NoError(t, err)
	for _, d := range ds {
		assert.Equal(t, notification.StatusPending, d.Status())
		assert.Equal(t, "QUIET_HOURS", d.ErrorCode(), "an operator sees why it waits")
		assert.True(t, d.DueAt().Equal(sevenAM), "due at 07:00 Seoul time, not %s", d.DueAt().In(seoul(t)))
	}
	waiting, err := h.herald.QueryDeliveries(ctx, herald.DeliveryQuery{Code: "QUIET_HOURS", Recipient: "minji"})
	require.NoError(t, err)
	assert.Len(t, waiting.Deliveries, 2, "operators find the pushes waiting for quiet hours by their code")

	testutil.WaitDelivered(t, h.pool, quiet.ID(), 10*time.Second)
	var quietPushes []time.Time
	for _, r := range h.fake.Accepted() {
		if r.Body == "your weekly summary" {
			quietPushes = append(quietPushes, r.At.Add(time.Duration(clock.skew.Load())))
		}
	}
	require.Len(t, quietPushes, 2, "one push per device, none lost")
	for _, at := range quietPushes {
		assert.False(t, at.Before(sevenAM), "nothing early: pushed at %s", at.In(seoul(t)))
		assert.WithinDuration(t, sevenAM, at, 2*time.Second, "pushed at 07:00 Seoul time")
	}
}

func TestAMutedTypeReachesTheInboxButIsNeverPushedEvenWhenUrgent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, _ := newClockedHarness(t, fastConfig())
	require.NoError(t, h.herald.Preferences().Set(ctx, "ana", herald.Preferences{Muted: []string{"marketing"}}))
	require.NoError(t, h.herald.Tokens().Register(ctx, "ana", "ana-phone", notification.PlatformIOS))
	h.run()
	muted := h.raise(true, Alert{User: "ana", Kind: "marketing", Text: "sale", Urgent: true})[0]
	other := h.raise(true, Alert{User: "ana", Text: "your order shipped"})[0]

	testutil.WaitDelivered(t, h.pool, other.ID(), 10*time.Second)
	testutil.WaitIdle(t, h.pool, 10*time.Second)
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusMuted: 1}, h.statuses(muted))
	received := h.fake.Accepted()
	require.Len(t, received, 1)
	assert.Equal(t, "your order shipped", received[0].Body)
	page, err := h.herald.Inbox().List(ctx, "ana", "", 10)
	require.NoError(t, err)
	assert.Len(t, page.Notifications, 2, "a muted notification is still in the inbox")
	muteds, err := h.herald.ListDeliveriesByStatus(ctx, notification.StatusMuted, 10)
	require.NoError(t, err)
	require.Len(t, muteds, 1, "operators see muted deliveries")
	assert.Equal(t, "MUTED", muteds[0].ErrorCode())
}

func TestAPreferenceChangedAfterExpansionDecidesThePushesNotYetSent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, clock := newClockedHarness(t, fastConfig())
	clock.set(t, time.Date(2026, 12, 1, 23, 0, 0, 0, seoul(t)))
	night := herald.Preferences{QuietHours: herald.QuietHours{Start: "22:00", End: "07:00"}, TimeZone: "Asia/Seoul"}
	for _, user := range []string{"jun", "hana"} {
		require.NoError(t, h.herald.Preferences().Set(ctx, user, night))
		require.NoError(t, h.herald.Tokens().Register(ctx, user, user+"-phone", notification.PlatformAndroid))
	}
	h.run()
	forJun := h.raise(true, Alert{User: "jun", Kind: "digest", Text: "digest"})[0]
	forHana := h.raise(true, Alert{User: "hana", Kind: "digest", Text: "digest"})[0]
	h.waitStatuses(forJun, map[notification.DeliveryStatus]int{notification.StatusPending: 1}, 5*time.Second)
	h.waitStatuses(forHana, map[notification.DeliveryStatus]int{notification.StatusPending: 1}, 5*time.Second)

	// Jun drops his quiet hours: his push goes now. Hana mutes the type:
	// hers is never pushed.
	require.NoError(t, h.herald.Preferences().Set(ctx, "jun", herald.Preferences{TimeZone: "Asia/Seoul"}))
	require.NoError(t, h.herald.Preferences().Set(ctx, "hana", herald.Preferences{Muted: []string{"digest"}, QuietHours: night.QuietHours, TimeZone: "Asia/Seoul"}))
	testutil.WaitDelivered(t, h.pool, forJun.ID(), 10*time.Second)
	h.waitStatuses(forHana, map[notification.DeliveryStatus]int{notification.StatusMuted: 1}, 10*time.Second)

	got, err := h.herald.Preferences().Get(ctx, "hana")
	require.NoError(t, err)
	assert.Equal(t, herald.Preferences{Muted: []string{"digest"}, QuietHours: night.QuietHours, TimeZone: "Asia/Seoul"}, got)
	deleted, err := h.herald.Preferences().Delete(ctx, "hana")
	require.NoError(t, err)
	assert.True(t, deleted)
	got, err = h.herald.Preferences().Get(ctx, "hana")
	require.NoError(t, err)
	assert.Equal(t, herald.Preferences{}, got, "no preferences: nothing muted, no quiet hours")
}

func TestPreferencesAreValidatedBeforeAnythingIsStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	tests := []struct {
		name string
		p    herald.Preferences
		want error
	}{
		{"a time zone that does not exist", herald.Preferences{TimeZone: "Mars/Olympus"}, notification.ErrInvalidTimeZone},
		{"a time that is not HH:MM", herald.Preferences{QuietHours: herald.QuietHours{Start: "10pm", End: "07:00"}}, notification.ErrInvalidClock},
		{"a window that starts where it ends", herald.Preferences{QuietHours: herald.QuietHours{Start: "07:00", End: "07:00"}}, notification.ErrInvalidClock},
		{"an empty muted type", herald.Preferences{Muted: []string{""}}, notification.ErrRequired},
	}
	for _, tt := range tests {
		err := h.herald.Preferences().Set(ctx, "zoe", tt.p)
		assert.ErrorIs(t, err, tt.want, tt.name)
	}
	got, err := h.herald.Preferences().Get(ctx, "zoe")
	require.NoError(t, err)
	assert.Equal(t, herald.Preferences{}, got)
}

func TestTheQuietHoursRuleIsTheSameInGoAndInPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	cases := []struct {
		zone, start, end string
		at               time.Time
	}{
		{"Asia/Seoul", "22:00", "07:00", time.Date(2026, 12, 1, 21, 59, 0, 0, time.UTC)},
		{"Asia/Seoul", "22:00", "07:00", time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)}, // 22:00 Seoul
		{"Asia/Seoul", "22:00", "07:00", time.Date(2026, 12, 1, 15, 30, 0, 0, time.UTC)},
		{"Asia/Seoul", "22:00", "07:00", time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)}, // 07:00 Seoul
		{"Europe/Paris", "12:30", "14:00", time.Date(2026, 6, 1, 11, 0, 0, 0, time.UTC)},
		{"Europe/Paris", "12:30", "14:00", time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)},
		// The night daylight-saving time starts and the night it ends.
		{"America/New_York", "22:00", "07:00", time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC)},
		{"America/New_York", "22:00", "07:00", time.Date(2026, 11, 1, 5, 0, 0, 0, time.UTC)},
		{"UTC", "00:00", "06:00", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		p := notification.Preferences{QuietHours: notification.QuietHours{Start: c.start, End: c.end}, TimeZone: c.zone}
		var inPostgres time.Time
		require.NoError(t, pool.QueryRow(ctx, `SELECT herald_quiet_until($1, $2, $3::time, $4::time)`,
			c.at, c.zone, c.start, c.end).Scan(&inPostgres))
		assert.True(t, p.PushAt(c.at, false).Equal(inPostgres), "%s %s-%s at %s: Go %s, Postgres %s",
			c.zone, c.start, c.end, c.at, p.PushAt(c.at, false), inPostgres)
		assert.True(t, p.PushAt(c.at, true).Equal(c.at), "urgent goes at once")
	}
}

// "CET", "MET", "EET" and "WET" are IANA zones with summer time, which Go
// reads (and Set accepts), but also names in Postgres's list of time zone
// abbreviations, which AT TIME ZONE looks up first: as fixed offsets (CET
// +01:00 all year), they moved a summer night's quiet hours an hour, and
// the claim pushed at 22:30 Paris time through quiet hours from 22:00.
func TestQuietHoursInAZoneNamedLikeAnAbbreviationFollowTheZonesSummerTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	summer, winter := time.Date(2026, 7, 1, 20, 30, 0, 0, time.UTC), time.Date(2026, 1, 15, 21, 30, 0, 0, time.UTC)
	for _, zone := range []string{"CET", "MET", "EET", "WET", "EST", "UTC", "GMT", "Europe/Paris"} {
		for _, at := range []time.Time{summer, winter, summer.Add(-4 * time.Hour), summer.Add(9 * time.Hour)} {
			p := notification.Preferences{QuietHours: notification.QuietHours{Start: "22:00", End: "07:00"}, TimeZone: zone}
			var inPostgres time.Time
			var sessionZone string
			require.NoError(t, pool.QueryRow(ctx, `SELECT herald_quiet_until($1, $2, '22:00'::time, '07:00'::time),
				current_setting('TimeZone')`, at, zone).Scan(&inPostgres, &sessionZone))
			assert.True(t, p.PushAt(at, false).Equal(inPostgres), "%s at %s: Go %s, Postgres %s",
				zone, at, p.PushAt(at, false), inPostgres)
			assert.NotEqual(t, zone, sessionZone, "the session's time zone is left as it was")
		}
	}
}

func TestADeviceAtItsPerDeviceLimitWaitsWhileOthersGoAtFullSpeed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := fastConfig()
	cfg.Sender.DevicePerMinute = 5
	h, clock := newClockedHarness(t, cfg)
	require.NoError(t, h.herald.Tokens().Register(ctx, "hot", "hot-phone", notification.PlatformAndroid))
	// Forty other devices get five pushes each, at their limit; the hot
	// one gets twenty, raised among theirs.
	var others []string
	for i := range 40 {
		u := fmt.Sprintf("u%02d", i)
		require.NoError(t, h.herald.Tokens().Register(ctx, u, u+"-phone", notification.PlatformAndroid))
		others = append(others, u)
	}
	var events []notification.Event
	for i := range 20 {
		events = append(events, Alert{User: "hot", Text: "ping"})
		if i < 5 {
			for _, u := range others {
				events = append(events, Alert{User: u, Text: "ping"})
			}
		}
	}
	// The move to start (a day or more from today's date) is made before
	// Herald runs, so that no claim races it. The windows start at the
	// first claim, after the raise below.
	start := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clock.set(t, start)
	h.run()
	began := time.Now()
	h.raise(true, events...)

	perToken := func() map[string]int {
		counts := map[string]int{}
		for _, r := range h.fake.Accepted() {
			counts[r.Token]++
		}
		return counts
	}
	require.Eventually(t, func() bool {
		counts := perToken()
		for _, u := range others {
			if counts[u+"-phone"] < 5 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "the other devices got all their pushes")
	t.Logf("40 devices x 5 pushes while one device was held: %s", time.Since(began))
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, 5, perToken()["hot-phone"], "the hot device got its limit and no more")
	held, err := h.herald.ListDeliveriesByStatus(ctx, notification.StatusPending, 100)
	require.NoError(t, err)
	require.Len(t, held, 15, "the excess waits; nothing is dropped")
	for _, d := range held {
		assert.Equal(t, "DEVICE_RATE", d.ErrorCode())
		assert.False(t, d.DueAt().Before(start.Add(time.Minute)), "due when its minute window ends")
	}

	// Each minute later, five more go, never more, until all have.
	for i, at := range []time.Duration{61 * time.Second, 3 * time.Minute, 5 * time.Minute} {
		clock.set(t, start.Add(at))
		want := 10 + 5*i
		require.Eventually(t, func() bool { return perToken()["hot-phone"] == want }, 30*time.Second, 10*time.Millisecond,
			"at +%s", at)
		time.Sleep(300 * time.Millisecond)
		assert.Equal(t, want, perToken()["hot-phone"], "at +%s", at)
	}
}

func TestForgettingAUserLeavesNoRowNamingThemOrTheirTokensAndOthersPushesGoOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, clock := newClockedHarness(t, fastConfig())
	clock.set(t, time.Date(2026, 12, 1, 23, 0, 0, 0, seoul(t)))
	aliceTokens := []string{"alice-phone-7f3a", "alice-tablet-9c1d"}
	for _, tok := range aliceTokens {
		require.NoError(t, h.herald.Tokens().Register(ctx, "alice", tok, notification.PlatformAndroid))
	}
	require.NoError(t, h.herald.Tokens().Register(ctx, "bob", "bob-phone", notification.PlatformAndroid))
	h.run()
	sent := h.raise(true, Alert{User: "alice", Text: "sent before"})[0]
	testutil.WaitDelivered(t, h.pool, sent.ID(), 10*time.Second)
	// Quiet hours hold her next push; a dead letter names her.
	require.NoError(t, h.herald.Preferences().Set(ctx, "alice", herald.Preferences{
		Muted: []string{"marketing"}, QuietHours: herald.QuietHours{Start: "22:00", End: "07:00"}, TimeZone: "Asia/Seoul"}))
	waiting := h.raise(true, Alert{User: "alice", Text: "held for the morning"})[0]
	h.waitStatuses(waiting, map[notification.DeliveryStatus]int{notification.StatusPending: 2}, 5*time.Second)
	_, err := h.pool.Exec(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason)
		VALUES ('herald_outbox', 'x', convert_to('{"v":1,"events":[{"type":"x","data":{"user":"alice"}}]}', 'UTF8'), 'test')`)
	require.NoError(t, err)

	// Bob's pushes are in flight while she is forgotten.
	var wg sync.WaitGroup
	wg.Add(1)
	var bobs []*notification.Notification
	go func() {
		defer wg.Done()
		for range 20 {
			bobs = append(bobs, h.raise(true, Alert{User: "bob", Text: "hello bob"})...)
		}
	}()
	report, err := h.herald.ForgetUser(ctx, "alice")
	require.NoError(t, err)
	wg.Wait()
	assert.Equal(t, 2, report.Notifications)
	assert.Equal(t, 2, report.Tokens)
	assert.Equal(t, 1, report.Preferences)
	assert.Equal(t, 1, report.DeadLetters)

	// No row of Herald's tables names her or one of her tokens.
	rows, err := h.pool.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'public' AND (table_name LIKE 'herald%' OR table_name LIKE 'watermill%')`)
	require.NoError(t, err)
	var tables []string
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		tables = append(tables, name)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, tables)
	for _, table := range tables {
		for _, needle := range append([]string{"alice"}, aliceTokens...) {
			var n int
			require.NoError(t, h.pool.QueryRow(ctx, `SELECT count(*) FROM public.`+table+` t
				WHERE strpos(row_to_json(t)::text, $1) > 0 OR strpos(convert_from(convert_to(row_to_json(t)::text, 'UTF8'), 'UTF8'), $1) > 0`,
				needle).Scan(&n))
			assert.Zero(t, n, "%s names %s", table, needle)
		}
	}
	var letters int
	require.NoError(t, h.pool.QueryRow(ctx, `SELECT count(*) FROM herald_dead_letters WHERE position('alice'::bytea IN payload) > 0`).Scan(&letters))
	assert.Zero(t, letters)

	// Bob's pushes all arrive; nothing more reaches her former devices,
	// not even at 07:00.
	for _, n := range bobs {
		testutil.WaitDelivered(t, h.pool, n.ID(), 10*time.Second)
	}
	clock.set(t, time.Date(2026, 12, 2, 7, 0, 1, 0, seoul(t)))
	h.raise(true, Alert{User: "alice", Text: "after"})
	testutil.WaitIdle(t, h.pool, 10*time.Second)
	for _, r := range h.fake.Accepted() {
		if r.Token == aliceTokens[0] || r.Token == aliceTokens[1] {
			assert.Equal(t, "sent before", r.Body, "only the push sent before she was forgotten")
		}
	}
	again, err := h.herald.ForgetUser(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, 1, again.Notifications, "idempotent: only the notification raised since")
}

func TestInboxRetentionIsOffByDefaultAndDeletesOnlyNotificationsWhosePushesAreDone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	assert.Negative(t, herald.Config{}.WithDefaults().Housekeeping.ReadRetention, "default: off, kept")
	assert.Negative(t, herald.Config{}.WithDefaults().Housekeeping.UnreadRetention, "default: off, kept")
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 1)
	h.run()
	read := h.raise(true, comment("r1", "ann", "author"))[0]
	unread := h.raise(true, comment("u1", "ann", "author"))[0]
	open := h.raise(true, comment("o1", "ann", "author"))[0]
	for _, n := range []*notification.Notification{read, unread, open} {
		testutil.WaitDelivered(t, h.pool, n.ID(), 10*time.Second)
	}
	require.NoError(t, h.herald.Inbox().MarkRead(ctx, "author", read.ID()))
	// Forty days on; one push is still waiting (say, for a retry).
	_, err := h.pool.Exec(ctx, `UPDATE herald_notifications SET created_at = created_at - interval '40 days'`)
	require.NoError(t, err)
	_, err = h.pool.Exec(ctx, `UPDATE herald_deliveries SET status = 'retry_scheduled', due_at = now() + interval '1 hour'
		WHERE notification_id = $1`, open.ID())
	require.NoError(t, err)

	sweep := func(cfg app.HousekeepingConfig) app.HousekeepingReport {
		hk, err := app.NewHousekeeper(adapters.NewPostgresHousekeepingRepository(h.pool), cfg)
		require.NoError(t, err)
		report, err := hk.Sweep(ctx)
		require.NoError(t, err)
		return report
	}
	assert.Zero(t, sweep(app.HousekeepingConfig{}).Notifications, "kept by default")
	assert.Equal(t, 1, sweep(app.HousekeepingConfig{ReadRetention: 30 * 24 * time.Hour}).Notifications, "the read one")
	assert.Equal(t, 1, sweep(app.HousekeepingConfig{UnreadRetention: 30 * 24 * time.Hour}).Notifications, "the unread one whose push is done")
	page, err := h.herald.Inbox().List(ctx, "author", "", 10)
	require.NoError(t, err)
	require.Len(t, page.Notifications, 1)
	assert.Equal(t, open.ID(), page.Notifications[0].ID(), "a notification with a push still waiting is kept")
}

func TestAPushHeldByQuietHoursExpiresIfItsExpiryComesFirstAndASendAtInsideThemWaitsForTheirEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, clock := newClockedHarness(t, fastConfig())
	elevenPM := time.Date(2026, 12, 1, 23, 0, 0, 0, seoul(t))
	clock.set(t, elevenPM)
	require.NoError(t, h.herald.Preferences().Set(ctx, "minji", herald.Preferences{
		QuietHours: herald.QuietHours{Start: "22:00", End: "07:00"}, TimeZone: "Asia/Seoul",
	}))
	require.NoError(t, h.herald.Tokens().Register(ctx, "minji", "minji-phone", notification.PlatformAndroid))
	h.run()
	sevenAM := time.Date(2026, 12, 2, 7, 0, 0, 0, seoul(t))
	live := h.notify(notification.Draft{Recipient: "minji", Type: "live", ExpiresAt: elevenPM.Add(time.Hour),
		Content: notification.Content{Title: "Live now"}})
	morning := h.notify(notification.Draft{Recipient: "minji", Type: "reminder", SendAt: elevenPM.Add(6 * time.Hour),
		Content: notification.Content{Title: "Class at 9"}})
	for _, n := range []*notification.Notification{live, morning} {
		h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusPending: 1}, 5*time.Second)
		ds, err := h.herald.ListDeliveries(ctx, n.ID())
		require.NoError(t, err)
		assert.True(t, ds[0].DueAt().Equal(sevenAM), "held until 07:00 Seoul, not %s", ds[0].DueAt().In(seoul(t)))
	}
	clock.set(t, sevenAM.Add(time.Second))
	h.waitStatuses(live, map[notification.DeliveryStatus]int{notification.StatusExpired: 1}, 15*time.Second)
	testutil.WaitDelivered(t, h.pool, morning.ID(), 15*time.Second)
	for _, r := range h.fake.Accepted() {
		assert.Equal(t, "Class at 9", r.Title, "the expired push never went")
	}
}

func TestForgettingAUserBeforeTheRelayRanKeepsOnlyTheOtherUsersPartOfTheirSharedOutboxMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, _ := newClockedHarness(t, fastConfig())
	require.NoError(t, h.herald.Tokens().Register(ctx, "alice", "alice-phone", notification.PlatformAndroid))
	require.NoError(t, h.herald.Tokens().Register(ctx, "bob", "bob-phone", notification.PlatformAndroid))
	// One host transaction, one outbox message, two users' events.
	ns := h.raise(true, Alert{User: "alice", Text: "for alice"}, Alert{User: "bob", Text: "for bob"})
	report, err := h.herald.ForgetUser(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, 1, report.OutboxRows, "the shared message is rewritten, not deleted")
	var named int
	require.NoError(t, h.pool.QueryRow(ctx, `SELECT count(*) FROM watermill_herald_outbox
		WHERE strpos(payload::text, 'alice') > 0 OR strpos(payload::text, $1) > 0`, ns[0].ID().String()).Scan(&named))
	assert.Zero(t, named, "no outbox row names her or her notification")

	h.run()
	testutil.WaitDelivered(t, h.pool, ns[1].ID(), 10*time.Second)
	testutil.WaitIdle(t, h.pool, 10*time.Second)
	accepted := h.fake.Accepted()
	require.Len(t, accepted, 1, "bob's push still goes; nothing reaches her former device")
	assert.Equal(t, "bob-phone", accepted[0].Token)
}

// An event raised for someone else (Bob's post, commented on by Alice)
// still names Alice in its data; forgetting her before the relay ran must
// not leave that in the outbox, and Bob's push still goes.
func TestForgettingAUserBeforeTheRelayRanLeavesNoOutboxEventDataNamingThem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	require.NoError(t, h.herald.Tokens().Register(ctx, "bob-author", "bob-phone", notification.PlatformAndroid))
	ns := h.raise(true, comment("c1", "alice-commenter", "bob-author"))
	require.Len(t, ns, 1)
	_, err := h.herald.ForgetUser(ctx, "alice-commenter")
	require.NoError(t, err)
	var named int
	require.NoError(t, h.pool.QueryRow(ctx, `SELECT count(*) FROM watermill_herald_outbox
		WHERE strpos(payload::text, 'alice-commenter') > 0`).Scan(&named))
	assert.Zero(t, named, "no outbox row names her")

	h.run()
	testutil.WaitDelivered(t, h.pool, ns[0].ID(), 10*time.Second)
}
