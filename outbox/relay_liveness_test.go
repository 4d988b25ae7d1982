package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// pingEvent notifies one user.
type pingEvent struct {
	UserID string `json:"user_id"`
}

func (pingEvent) EventType() string { return "ping" }

// ratingEvent carries a float, which JSON cannot hold when it is NaN.
type ratingEvent struct {
	UserID string  `json:"user_id"`
	Score  float64 `json:"score"`
}

func (ratingEvent) EventType() string { return "rating" }

// sealedEvent is only valid with a field that never travels in its JSON.
type sealedEvent struct {
	UserID string `json:"user_id"`
	Secret string `json:"-"`
}

func (sealedEvent) EventType() string { return "sealed" }

func (e sealedEvent) Validate() error {
	if e.Secret == "" {
		return errors.New("sealed event needs its secret")
	}
	return nil
}

// noteEvent carries text of any size.
type noteEvent struct {
	UserID string `json:"user_id"`
	Text   string `json:"text"`
}

func (noteEvent) EventType() string { return "note" }

func toUser(userID string) []notification.Draft {
	return []notification.Draft{{Recipient: userID, Type: "ping", Content: notification.Content{Title: "hi"}}}
}

func livenessRules(t *testing.T) *notification.Rules {
	t.Helper()
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, func(e pingEvent) ([]notification.Draft, error) { return toUser(e.UserID), nil }))
	require.NoError(t, notification.On(rules, func(e ratingEvent) ([]notification.Draft, error) { return toUser(e.UserID), nil }))
	require.NoError(t, notification.On(rules, func(e sealedEvent) ([]notification.Draft, error) { return toUser(e.UserID), nil }))
	require.NoError(t, notification.On(rules, func(e noteEvent) ([]notification.Draft, error) { return toUser(e.UserID), nil }))
	return rules
}

// runRelay runs a relay, and a broadcast expander, until the test ends.
func runRelay(t *testing.T, pool *pgxpool.Pool, rules *notification.Rules) *outbox.Relay {
	t.Helper()
	relay, err := outbox.NewRelay(pool, rules, adapters.RelayStoreIn, outbox.RelayConfig{PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	expander, err := app.NewBroadcastExpander(adapters.NewPostgresDeliveryRepository(pool),
		app.BroadcastExpanderConfig{PollInterval: 20 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { assert.NoError(t, relay.Run(ctx)); done <- struct{}{} }()
	go func() { assert.NoError(t, expander.Run(ctx)); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return relay
}

// runRelayOnly runs a relay (no broadcast expander) with cfg on pool until
// the test ends.
func runRelayOnly(t *testing.T, pool *pgxpool.Pool, rules *notification.Rules, cfg outbox.RelayConfig) {
	t.Helper()
	relay, err := outbox.NewRelay(pool, rules, adapters.RelayStoreIn, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); assert.NoError(t, relay.Run(ctx)) }()
	t.Cleanup(func() { cancel(); <-done })
}

func addTokens(t *testing.T, pool *pgxpool.Pool, user string, tokens ...string) {
	t.Helper()
	for _, tok := range tokens {
		_, err := pool.Exec(context.Background(), `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
			VALUES ($1, $2, 'android', now(), now())`, tok, user)
		require.NoError(t, err)
	}
}

// raise raises events in a transaction of their own and commits.
func raise(t *testing.T, pool *pgxpool.Pool, ob *outbox.Outbox, events ...notification.Event) []*notification.Notification {
	t.Helper()
	var ns []*notification.Notification
	err := pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		var err error
		ns, err = ob.Raise(context.Background(), tx, events...)
		return err
	})
	require.NoError(t, err)
	return ns
}

func deliveriesOf(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM herald_deliveries WHERE notification_id = $1`, id).Scan(&n))
	return n
}

func waitDeliveries(t *testing.T, pool *pgxpool.Pool, n *notification.Notification, want int, within time.Duration) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, want, deliveriesOf(t, pool, n.ID()))
	}, within, 20*time.Millisecond)
}

func deadLetters(t *testing.T, pool *pgxpool.Pool) []adapters.DeadLetter {
	t.Helper()
	dls, err := adapters.NewPostgresDeadLetterRepository(pool).List(context.Background(), false, 1000)
	require.NoError(t, err)
	return dls
}

func TestRaiseOfAnUnencodableEventLeavesNothingAndTheTransactionGoesOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	ob := outbox.New(livenessRules(t), adapters.NotificationWriterIn, outbox.Config{})
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit

	_, err = ob.Raise(ctx, tx, pingEvent{UserID: "u1"}, ratingEvent{UserID: "u2", Score: math.NaN()})
	require.ErrorIs(t, err, notification.ErrMalformedEvent)
	var inTx int
	require.NoError(t, tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM herald_notifications) + (SELECT count(*) FROM watermill_herald_outbox)`).Scan(&inTx))
	assert.Zero(t, inTx, "nothing of the failed Raise is in the transaction")

	// The host's transaction is still usable: it raises again and commits.
	_, err = tx.Exec(ctx, `CREATE TABLE host_rows (id int)`)
	require.NoError(t, err)
	ns, err := ob.Raise(ctx, tx, ratingEvent{UserID: "u2", Score: 4.5})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	var notifications, messages int
	require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM herald_notifications), (SELECT count(*) FROM watermill_herald_outbox)`).Scan(&notifications, &messages))
	assert.Equal(t, 1, notifications)
	assert.Equal(t, 1, messages)
	assert.Equal(t, "u2", ns[0].Recipient())
}

func TestEventValidatedByAFieldOutsideItsJSONIsRelayed(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "u1", "u1-token")
	runRelay(t, pool, rules)

	ns := raise(t, pool, ob, sealedEvent{UserID: "u1", Secret: "only in memory"})
	waitDeliveries(t, pool, ns[0], 1, 10*time.Second)
	assert.Empty(t, deadLetters(t, pool))
}

func TestRecipientWith200000TokensGetsEveryDeliveryAndLaterEventsAreNotHeldUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	const tokens = 200_000
	_, err := pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT 'crowd-token-' || lpad(g::text, 7, '0'), 'crowd', 'android', now(), now() FROM generate_series(1, $1) g`, tokens)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `ANALYZE herald_device_tokens`)
	require.NoError(t, err)
	addTokens(t, pool, "someone", "someone-token")
	runRelay(t, pool, rules)

	crowd := raise(t, pool, ob, pingEvent{UserID: "crowd"})[0]
	later := raise(t, pool, ob, pingEvent{UserID: "someone"})[0]
	waitDeliveries(t, pool, later, 1, 15*time.Second)
	waitDeliveries(t, pool, crowd, tokens, 60*time.Second)
	assert.Empty(t, deadLetters(t, pool))
	// Each transaction created at most a chunk: deliveries are stamped with
	// their transaction's start (the database clock).
	var largest int
	require.NoError(t, pool.QueryRow(ctx, `SELECT max(c) FROM (SELECT count(*) AS c FROM herald_deliveries
		WHERE notification_id = $1 GROUP BY created_at) per_transaction`, crowd.ID()).Scan(&largest))
	assert.LessOrEqual(t, largest, adapters.ExpandChunkSize)
}

// curse makes every delivery to token fail with the given SQLSTATE, for the
// first `times` attempts (counted in a sequence, which rollbacks do not undo).
func curse(t *testing.T, pool *pgxpool.Pool, token, sqlstate string, times int) {
	t.Helper()
	_, err := pool.Exec(context.Background(), fmt.Sprintf(`
		CREATE SEQUENCE curse_attempts;
		CREATE FUNCTION curse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.token = %s AND nextval('curse_attempts') <= %d THEN
				RAISE EXCEPTION 'this delivery is cursed' USING ERRCODE = %s;
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER curse BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION curse();`,
		pgQuote(token), times, pgQuote(sqlstate)))
	require.NoError(t, err)
}

func pgQuote(s string) string { return "'" + s + "'" }

func TestMessageFailingForADeterministicReasonIsDeadLetteredEventByEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "cursed", "cursed-token")
	addTokens(t, pool, "later", "later-token")
	_, err := pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT 'fine-token-' || g, 'fine-' || g, 'android', now(), now() FROM generate_series(0, 99) g`)
	require.NoError(t, err)
	curse(t, pool, "cursed-token", "22023", math.MaxInt32) // invalid_parameter_value, every time
	relay := runRelay(t, pool, rules)

	// One host transaction, so one outbox message; the cursed recipient's
	// events are the 1st and the 38th of 102.
	var events []notification.Event
	for i := range 100 {
		if i == 0 || i == 37 {
			events = append(events, pingEvent{UserID: "cursed"})
		}
		events = append(events, pingEvent{UserID: fmt.Sprint("fine-", i)})
	}
	ns := raise(t, pool, ob, events...)
	later := raise(t, pool, ob, pingEvent{UserID: "later"})[0]
	waitDeliveries(t, pool, later, 1, 20*time.Second)
	for i, n := range ns {
		if n.Recipient() == "cursed" {
			assert.Zero(t, deliveriesOf(t, pool, n.ID()), "event %d", i)
		} else {
			assert.Equal(t, 1, deliveriesOf(t, pool, n.ID()), "event %d", i)
		}
	}

	dls := deadLetters(t, pool)
	require.Len(t, dls, 2)
	for _, dl := range dls {
		assert.Contains(t, dl.Reason, "this delivery is cursed")
		assert.NotContains(t, dl.Reason, "cursed-token")
	}
	reasons := dls[0].Reason + " | " + dls[1].Reason
	assert.Contains(t, reasons, "event 0:")
	assert.Contains(t, reasons, "event 38:")
	// Each letter holds its failing event alone, replayable.
	for _, dl := range dls {
		assert.Equal(t, 1, strings.Count(string(dl.Payload), `"type"`))
		assert.NotContains(t, string(dl.Payload), ns[1].ID().String())
	}
	assert.Equal(t, int64(2), relay.Stats().DeadLetters)
	assert.Equal(t, int64(101), relay.Stats().Events)
}

func TestTransientFailureIsRetriedUntilItPassesAndNeverDeadLettered(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "u1", "u1-token")
	curse(t, pool, "u1-token", "40001", 4) // serialization_failure, more times than a deterministic failure is tried
	runRelay(t, pool, rules)

	n := raise(t, pool, ob, pingEvent{UserID: "u1"})[0]
	waitDeliveries(t, pool, n, 1, 30*time.Second)
	assert.Empty(t, deadLetters(t, pool))
}

// A relay whose connection is cut in the middle of a message (a failover,
// a pooler restart, an operator's pg_terminate_backend) starts again on a
// new transaction at once: on the dead one, every retry of the message
// failed until the ack deadline, 3 s a cut by default, and the events
// behind it waited. Here the deadline is 20 s, so waiting it out shows.
func TestARelayWhoseConnectionIsCutMidMessageStartsAgainWithoutWaitingOutTheAckDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "u1", "u1-token")
	// The first expansion to reach the token terminates its own backend.
	_, err := pool.Exec(ctx, `
		CREATE SEQUENCE cut_attempts;
		CREATE FUNCTION cut() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.token = 'u1-token' AND nextval('cut_attempts') = 1 THEN
				PERFORM pg_terminate_backend(pg_backend_pid());
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER cut BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION cut();`)
	require.NoError(t, err)
	runRelayOnly(t, pool, rules, outbox.RelayConfig{PollInterval: 10 * time.Millisecond, AckDeadline: 20 * time.Second})

	n := raise(t, pool, ob, pingEvent{UserID: "u1"})[0]
	waitDeliveries(t, pool, n, 1, 10*time.Second)
	var cuts int
	require.NoError(t, pool.QueryRow(ctx, `SELECT last_value FROM cut_attempts`).Scan(&cuts))
	assert.GreaterOrEqual(t, cuts, 2, "the connection was cut once, and the message expanded on another")
}

func TestEventsOfAnySizeRaiseAcceptsAreRelayed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "u1", "u1-token")

	// Over app.MaxEventBytes: refused before anything is written.
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := ob.Raise(ctx, tx, noteEvent{UserID: "u1", Text: strings.Repeat("x", app.MaxEventBytes)})
		return err
	})
	require.ErrorIs(t, err, notification.ErrTooLong)

	// Just under it, many at once: every one is relayed, none set aside.
	events := make([]notification.Event, 24)
	for i := range events {
		events[i] = noteEvent{UserID: "u1", Text: strings.Repeat("y", app.MaxEventBytes-100)}
	}
	ns := raise(t, pool, ob, events...)
	runRelay(t, pool, rules)
	for _, n := range ns {
		waitDeliveries(t, pool, n, 1, 30*time.Second)
	}
	assert.Empty(t, deadLetters(t, pool))
}
