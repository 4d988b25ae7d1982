package outbox_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// An outbox row written by hand with a hundred thousand events of a type
// this process has no rule for (each naming no notification): were each
// dead-lettered on its own, handling the message would outlast the ack
// deadline at every try and nothing behind it would ever move.
func TestAnOutboxRowWithAHundredThousandUnknownEventsNeverStallsTheMessagesBehindIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "later", "later-token")

	events := strings.Repeat(`{"type":"from_the_future","notifications":[]},`, 100_000)
	payload := `{"v":1,"events":[` + strings.TrimSuffix(events, ",") + `]}`
	_, err := pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		VALUES ('many-unknown-events', $1, '{}', pg_current_xact_id())`, payload)
	require.NoError(t, err)
	later := raise(t, pool, ob, pingEvent{UserID: "later"})[0]
	runRelay(t, pool, rules)

	waitDeliveries(t, pool, later, 1, 20*time.Second)
	require.Eventually(t, func() bool { return len(deadLetters(t, pool)) == 1 }, 10*time.Second, 20*time.Millisecond)
	dl := deadLetters(t, pool)[0]
	require.Equal(t, "many-unknown-events", dl.MessageUUID)
	require.Contains(t, dl.Reason, "100000 events, more than 1000")
}

// A recipient every expansion of whose notifications fails alike (here a
// constraint of the host's, refusing their token's deliveries): a campaign
// of a thousand events to them, in one message, is isolated event by
// event; that takes longer than one ack deadline, and each try's work was
// rolled back with it, so nothing behind the message ever moved.
func TestAThousandEventsThatFailToExpandNeverStallTheMessagesBehindThem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "stranded", "stranded-token")
	addTokens(t, pool, "later", "later-token")
	_, err := pool.Exec(ctx, `
		CREATE FUNCTION refuse_stranded() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.token = 'stranded-token' THEN
				RAISE EXCEPTION 'deliveries to stranded-token are refused' USING ERRCODE = 'check_violation';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_stranded BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION refuse_stranded();`)
	require.NoError(t, err)

	events := make([]notification.Event, 1000)
	for i := range events {
		events[i] = pingEvent{UserID: "stranded"}
	}
	raise(t, pool, ob, events...)
	later := raise(t, pool, ob, pingEvent{UserID: "later"})[0]
	runRelay(t, pool, rules)

	waitDeliveries(t, pool, later, 1, 60*time.Second)
	dls := deadLetters(t, pool)
	require.Len(t, dls, 1000)
	assert.Contains(t, dls[0].Reason, "deliveries to stranded-token are refused")
}

// slowPool is a pool on pool's database whose every write to the server
// waits rtt first: a database a network hop away, as most are.
func slowPool(t *testing.T, pool *pgxpool.Pool, rtt time.Duration) *pgxpool.Pool {
	t.Helper()
	cfg := pool.Config().Copy()
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return slowConn{Conn: c, rtt: rtt}, nil
	}
	slow, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(slow.Close)
	return slow
}

type slowConn struct {
	net.Conn
	rtt time.Duration
}

func (c slowConn) Write(b []byte) (int, error) {
	time.Sleep(c.rtt)
	return c.Conn.Write(b)
}

// A rolled-back deploy leaves a campaign of a thousand events (one host
// transaction, one message) of a type this version has no rule for. Each is
// dead-lettered alone, replayable; with the database a millisecond away,
// one statement each outlasted the ack deadline at every try, and nothing
// behind the message ever moved.
func TestAThousandEventsOfAnUnknownTypeNeverStallTheMessagesBehindThemOnADatabaseAMillisecondAway(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	newer := livenessRules(t) // the version that raised them knows "note"
	ob := outbox.New(newer, adapters.NotificationWriterIn, outbox.Config{})
	older := notification.NewRules()
	require.NoError(t, notification.On(older, func(e pingEvent) ([]notification.Draft, error) { return toUser(e.UserID), nil }))
	addTokens(t, pool, "later", "later-token")

	events := make([]notification.Event, 1000)
	for i := range events {
		events[i] = noteEvent{UserID: fmt.Sprint("reader-", i), Text: "new feature"}
	}
	raise(t, pool, ob, events...)
	later := raise(t, pool, ob, pingEvent{UserID: "later"})[0]
	runRelay(t, slowPool(t, pool, time.Millisecond), older)

	waitDeliveries(t, pool, later, 1, 60*time.Second)
	require.Len(t, deadLetters(t, pool), 1000)
}

type progressEvent struct {
	UserID string `json:"user_id"`
}

func (progressEvent) EventType() string { return "progress" }

// onProgress adds progressEvent's rule to rules: one notification to its
// user, under the collapse key "import", so that each supersedes the one
// before.
func onProgress(t *testing.T, rules *notification.Rules) {
	t.Helper()
	require.NoError(t, notification.On(rules, func(e progressEvent) ([]notification.Draft, error) {
		return []notification.Draft{{Recipient: e.UserID, Type: "progress", CollapseKey: "import",
			Content: notification.Content{Title: "importing"}}}, nil
	}))
}

// An import notifies its owner of its progress under one collapse key, far
// faster than the relay expands (or while no relay runs): when the first
// of them was expanded, every newer one was already committed, and the
// expansion superseded all of them but the newest in one statement. With
// 300,000 that statement outlasted the ack deadline at every try, and
// nothing behind the message ever moved.
func TestACollapseKeyRaisedThreeHundredThousandTimesNeverStallsTheMessagesBehindIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	onProgress(t, rules)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "owner", "owner-token")
	addTokens(t, pool, "later", "later-token")

	first := raise(t, pool, ob, progressEvent{UserID: "owner"})[0]
	// The newer ones, as Raise writes them (their outbox messages, behind,
	// are not needed to show the stall).
	_, err := pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at, collapse_key)
		SELECT gen_random_uuid(), 'owner', 'progress', 'importing', $1::timestamptz + g * interval '1 microsecond', 'import'
		FROM generate_series(1, 300000) g`, first.CreatedAt())
	require.NoError(t, err)
	later := raise(t, pool, ob, pingEvent{UserID: "later"})[0]
	runRelay(t, pool, rules)

	waitDeliveries(t, pool, later, 1, 30*time.Second)
	var superseded bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT superseded_at IS NOT NULL FROM herald_notifications WHERE id = $1`,
		first.ID()).Scan(&superseded))
	assert.True(t, superseded, "the oldest is superseded by the newest")
}

type digestEvent struct {
	UserID string `json:"user_id"`
}

func (digestEvent) EventType() string { return "digest" }

// A recipient with half a million devices (a shared kiosk account, a load
// test's user) gets a digest scheduled an hour ahead, then a newer one with
// the same collapse key: expanding the newer closed every held delivery of
// the older at once, half a million rows in one statement, which outlasted
// the ack deadline at every try, and nothing behind the message ever moved.
func TestANewerNotificationToARecipientWithHalfAMillionDevicesNeverStallsTheMessagesBehindIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	require.NoError(t, notification.On(rules, func(e digestEvent) ([]notification.Draft, error) {
		return []notification.Draft{{Recipient: e.UserID, Type: "digest", CollapseKey: "digest",
			SendAt: time.Now().Add(time.Hour), Content: notification.Content{Title: "digest"}}}, nil
	}))
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "later", "later-token")
	const devices = 500_000
	_, err := pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT 'kiosk-token-' || lpad(g::text, 7, '0'), 'kiosk', 'android', now(), now() FROM generate_series(1, $1) g`, devices)
	require.NoError(t, err)
	older := raise(t, pool, ob, digestEvent{UserID: "kiosk"})[0]
	// Its deliveries as the relay and the broadcast expander leave them,
	// held until its send time (its outbox message is done with).
	_, err = pool.Exec(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT $1, token, 'pending', now() + interval '1 hour', now(), now() FROM herald_device_tokens WHERE user_id = 'kiosk'`,
		older.ID())
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `DELETE FROM watermill_herald_outbox`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `ANALYZE`)
	require.NoError(t, err)

	raise(t, pool, ob, digestEvent{UserID: "kiosk"})
	later := raise(t, pool, ob, pingEvent{UserID: "later"})[0]
	runRelay(t, pool, rules)

	waitDeliveries(t, pool, later, 1, 30*time.Second)
	var closed int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE notification_id = $1 AND status = 'superseded'`,
		older.ID()).Scan(&closed))
	assert.Positive(t, closed, "the older's held deliveries close, the first of them at once")
}

// Rows written by hand with a transaction id far past the database's (as a
// restore leaves them) and one offset: requeuing them under the repair's own
// transaction id made them collide on the primary key, the repair failed at
// every start, and a relay that cannot check its position never started.
func TestOutboxRowsAheadOfTheTransactionIdsWithOneOffsetNeverStopTheRelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "later", "later-token")
	for i := range 2 {
		_, err := pool.Exec(ctx, `INSERT INTO watermill_herald_outbox ("offset", uuid, payload, metadata, transaction_id)
			VALUES (7, $1, '{"v":1,"events":[{"type":"from_the_future","notifications":[]}]}', '{}',
				(pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000 + $2)::text::xid8)`,
			fmt.Sprint("ahead-", i), i)
		require.NoError(t, err)
	}
	later := raise(t, pool, ob, pingEvent{UserID: "later"})[0]
	runRelay(t, pool, rules)

	waitDeliveries(t, pool, later, 1, 20*time.Second)
	require.Eventually(t, func() bool { return len(deadLetters(t, pool)) == 2 }, 20*time.Second, 20*time.Millisecond,
		"both rows are read, and set aside")
}
