package herald_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/migrations"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

func (h *harness) deliveryFor(n *notification.Notification, token string) *notification.Delivery {
	h.t.Helper()
	ds, err := h.herald.ListDeliveries(context.Background(), n.ID())
	require.NoError(h.t, err)
	for _, d := range ds {
		if d.Token() == token {
			return d
		}
	}
	return nil
}

func (h *harness) tokenExists(token string) bool {
	h.t.Helper()
	var n int
	require.NoError(h.t, h.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM herald_device_tokens WHERE token = $1`, token).Scan(&n))
	return n == 1
}

func TestEachFCMErrorClassLeadsToItsOutcome(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.PlatformPause = time.Minute // the rejected iOS push stays scheduled while we look
	h := newHarness(t, cfg)
	for _, tok := range []string{"ok", "unregistered", "invalid-token", "invalid-message", "flaky", "mismatch"} {
		require.NoError(t, h.herald.Tokens().Register(context.Background(), "author", tok, notification.PlatformAndroid))
	}
	require.NoError(t, h.herald.Tokens().Register(context.Background(), "author", "third-party", notification.PlatformIOS))
	h.fake.FailToken("unregistered", testutil.Fault{Code: testutil.FaultUnregistered})
	h.fake.FailToken("invalid-token", testutil.Fault{Code: testutil.FaultInvalidToken})
	h.fake.FailToken("invalid-message", testutil.Fault{Code: testutil.FaultInvalidMessage})
	h.fake.FailToken("flaky", testutil.Fault{Code: testutil.FaultInternal, Times: 2})
	h.fake.FailToken("mismatch", testutil.Fault{Code: testutil.FaultSenderIDMismatch})
	h.fake.FailToken("third-party", testutil.Fault{Code: testutil.FaultThirdPartyAuth})
	h.run()

	n := h.raise(true, comment("m1", "ann", "author"))[0]
	h.waitStatuses(n, map[notification.DeliveryStatus]int{
		notification.StatusSent:           2, // ok, and flaky after two retries
		notification.StatusTokenPruned:    3,
		notification.StatusFailed:         1,
		notification.StatusRetryScheduled: 1, // third-party: retried once the APNs key is fixed
	}, 15*time.Second)

	tests := []struct {
		token        string
		status       notification.DeliveryStatus
		code         string
		attempts     int
		tokenRemains bool
	}{
		{"ok", notification.StatusSent, "", 1, true},
		{"unregistered", notification.StatusTokenPruned, "UNREGISTERED", 1, false},
		{"invalid-token", notification.StatusTokenPruned, "INVALID_ARGUMENT", 1, false},
		{"invalid-message", notification.StatusFailed, "INVALID_ARGUMENT", 1, true},
		{"flaky", notification.StatusSent, "", 3, true},
		{"mismatch", notification.StatusTokenPruned, "SENDER_ID_MISMATCH", 1, false},
		{"third-party", notification.StatusRetryScheduled, "THIRD_PARTY_AUTH_ERROR", 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			d := h.deliveryFor(n, tt.token)
			require.NotNil(t, d)
			assert.Equal(t, tt.status, d.Status())
			assert.Equal(t, tt.code, d.ErrorCode())
			assert.Equal(t, tt.attempts, d.Attempts())
			assert.Equal(t, tt.tokenRemains, h.tokenExists(tt.token))
		})
	}
	assert.Len(t, h.fake.AcceptedFor("ok"), 1, "a token that succeeded is never sent again")
	// SENDER_ID_MISMATCH and THIRD_PARTY_AUTH_ERROR; the mismatch twice if
	// FCM answered it before accepting "ok" (the token is then kept and its
	// delivery given back until a push vouches for the project).
	assert.Contains(t, []int64{2, 3}, h.herald.Stats().Sender.ConfigAlarms)

	// A later notification does not go to the pruned tokens at all; the
	// iOS push waits for its platform's pause to end.
	n2 := h.raise(true, comment("m2", "ann", "author"))[0]
	h.waitStatuses(n2, map[notification.DeliveryStatus]int{
		notification.StatusSent: 2, notification.StatusFailed: 1, notification.StatusPending: 1,
	}, 15*time.Second)
}

// Herald run with the credentials of another Firebase project: FCM answers
// SENDER_ID_MISMATCH for every token. The registry must survive it.
func TestAServerWithAnotherProjectsCredentialsDeletesNoToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	tokens := h.registerTokens("author", 8)
	h.fake.FailAll(testutil.Fault{Code: testutil.FaultSenderIDMismatch})
	h.run()

	n := h.raise(true, comment("m1", "ann", "author"))[0]
	require.Eventually(t, func() bool { return h.fake.Requests() >= int64(len(tokens)) }, 15*time.Second, 10*time.Millisecond)
	for _, tok := range tokens {
		assert.True(t, h.tokenExists(tok), "token %s kept", tok)
		d := h.deliveryFor(n, tok)
		require.NotNil(t, d)
		assert.NotEqual(t, notification.StatusTokenPruned, d.Status())
		assert.Zero(t, d.Attempts(), "no attempt counted")
	}
	assert.Zero(t, h.herald.Stats().Sender.TokensPruned)

	// The credentials fixed: every push goes out.
	h.fake.ClearFaults()
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: len(tokens)}, 30*time.Second)
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 1)
	tok := "author-device-0000"
	h.fake.FailToken(tok, testutil.Fault{Code: testutil.FaultQuotaExceeded, RetryAfter: 2 * time.Second, Times: 1})
	h.run()

	n := h.raise(true, comment("m1", "ann", "author"))[0]
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		d := h.deliveryFor(n, tok)
		if assert.NotNil(c, d) {
			assert.Equal(c, notification.StatusRetryScheduled, d.Status())
		}
	}, 5*time.Second, 10*time.Millisecond)
	d := h.deliveryFor(n, tok)
	assert.Equal(t, "QUOTA_EXCEEDED", d.ErrorCode())
	assert.GreaterOrEqual(t, d.DueAt().Sub(d.UpdatedAt()), 2*time.Second, "due no sooner than Retry-After")

	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	got := h.fake.AcceptedFor(tok)
	require.Len(t, got, 1)
	// UpdatedAt is when the sender handled the 429; the retry is due two
	// seconds later and cannot be claimed before (1 ms for rounding).
	assert.GreaterOrEqual(t, got[0].At.Sub(d.UpdatedAt()), 2*time.Second-time.Millisecond)
	assert.Equal(t, int64(1), h.herald.Stats().Sender.QuotaExceeded)
}

func TestOutageOpensTheBreakerAndNothingIsLost(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Sender.MaxInFlight = 5
	cfg.FCM.SendTimeout = 1500 * time.Millisecond
	cfg.FCM.BreakerOpenFor = 2 * time.Second
	h := newHarness(t, cfg)
	tokens := h.registerTokens("author", 20)
	h.fake.FailAll(testutil.Fault{Code: testutil.FaultUnavailable})
	h.run()

	n := h.raise(true, comment("m1", "ann", "author"))[0]
	require.Eventually(t, func() bool { return h.herald.Stats().Breaker == "open" }, 15*time.Second, 5*time.Millisecond)
	// A request already on the wire when the breaker opened may still
	// arrive; after that, nothing may.
	time.Sleep(100 * time.Millisecond)
	before := h.fake.Requests()
	time.Sleep(time.Second) // well inside the 2 s open window
	assert.Equal(t, before, h.fake.Requests(), "no request reaches FCM while the breaker is open")
	assert.Positive(t, h.herald.Stats().Sender.CircuitOpen, "sends were refused by the breaker, not attempted")

	h.fake.ClearFaults()
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 20}, 20*time.Second)
	for _, tok := range tokens {
		assert.Len(t, h.fake.AcceptedFor(tok), 1, tok)
	}
	ds, err := h.herald.ListDeliveries(context.Background(), n.ID())
	require.NoError(t, err)
	attempts := 0
	for _, d := range ds {
		attempts += d.Attempts()
	}
	assert.LessOrEqual(t, attempts, 20+cfg.Sender.MaxInFlight*2, "refused sends count no attempt")
}

func TestExpiredLeaseIsTakenOverByAnotherWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := fastConfig()
	cfg.Sender.Lease = 2 * time.Second
	cfg.FCM.SendTimeout = time.Second
	// A sender whose process stops after its claim (SIGKILL, a frozen VM):
	// a relay alone expands the event, then the claim is taken and never
	// pushed or recorded. (A live sender cannot outlast its lease: Validate
	// makes the lease at least twice the send timeout.)
	stuck := newHarness(t, cfg)
	tokens := stuck.registerTokens("author", 5)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	relay, err := outbox.NewRelay(stuck.pool, rules, adapters.RelayStoreIn, outbox.RelayConfig{PollInterval: 10 * time.Millisecond})
	require.NoError(t, err)
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	n := stuck.raise(true, comment("m1", "ann", "author"))[0]
	stuck.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusPending: 5}, 10*time.Second)
	stopRelay()
	require.NoError(t, <-relayDone)
	repo := adapters.NewPostgresDeliveryRepository(stuck.pool)
	claimed, err := repo.ClaimDue(ctx, time.Now(), 10, cfg.Sender.Lease)
	require.NoError(t, err)
	require.Len(t, claimed, 5)
	claimedAt := time.Now()

	// A second worker on the same database, with a healthy FCM.
	healthy := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(context.Background(), healthy.ProjectID(), healthy.ClientOptions()...)
	require.NoError(t, err)
	other, err := herald.New(stuck.pool, client, rules, cfg)
	require.NoError(t, err)
	(&harness{t: t, pool: stuck.pool, fake: healthy, herald: other}).run()

	stuck.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 5}, 15*time.Second)
	for _, tok := range tokens {
		got := healthy.AcceptedFor(tok)
		require.Len(t, got, 1, tok)
		assert.GreaterOrEqual(t, got[0].At.Sub(claimedAt), cfg.Sender.Lease-100*time.Millisecond, "taken over only after the lease")
	}
	// The stuck worker's late outcomes must not overwrite the new one.
	var late []*notification.Delivery
	for _, d := range claimed {
		_, err := d.Delivery.RecordFailure(&notification.SendError{Class: notification.ErrProviderUnavailable, CountsAgainstProvider: true},
			cfg.Sender.Retry, time.Now(), 0)
		require.NoError(t, err)
		late = append(late, d.Delivery)
	}
	recorded, err := repo.Record(ctx, late)
	require.NoError(t, err)
	assert.Zero(t, recorded, "a claim that expired records nothing")
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusSent: 5}, stuck.statuses(n))
	assert.Zero(t, stuck.fake.AcceptedCount())
}

func TestPoisonMessagesAreMovedAside(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 1)
	ctx := context.Background()
	poison := []string{
		`{"hello":"world"}`,
		`{"v":1,"events":[{"type":"no_such_event","data":{},"notifications":[]}]}`,
		`{"v":1,"events":[{"type":"comment_created","data":{},"notifications":["not-a-uuid"]}]}`,
		`[1,2,3]`,
	}
	for i, p := range poison {
		_, err := h.pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
			VALUES ($1, $2, '{}', pg_current_xact_id())`, fmt.Sprintf("poison-%d", i), p)
		require.NoError(t, err)
	}
	h.run()
	n := h.raise(true, comment("after-poison", "ann", "author"))[0]
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)

	var reasons []string
	rows, err := h.pool.Query(ctx, `SELECT message_uuid || ': ' || reason FROM herald_dead_letters ORDER BY id`)
	require.NoError(t, err)
	for rows.Next() {
		var r string
		require.NoError(t, rows.Scan(&r))
		reasons = append(reasons, r)
	}
	require.NoError(t, rows.Err())
	require.Len(t, reasons, 4, "%q", reasons)
	assert.Contains(t, reasons[0], "malformed event")
	assert.Contains(t, reasons[1], "unknown event type")
	assert.Contains(t, reasons[2], "malformed event")
	assert.Equal(t, int64(4), h.herald.Stats().Relay.DeadLetters)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestLongOpenTransactionIsReportedAndThenEverythingIsDelivered(t *testing.T) {
	t.Parallel()
	// Its own cluster: a long transaction delays every database's outbox.
	ctx := context.Background()
	cluster, err := testutil.StartCluster(ctx, testutil.ClusterConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop() })
	pool, err := pgxpool.New(ctx, cluster.URL("postgres"))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = migrations.Up(ctx, pool)
	require.NoError(t, err)

	var logs syncBuffer
	cfg := fastConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Relay.LongTransactionWarning = time.Second
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	hd, err := herald.New(pool, client, rules, cfg)
	require.NoError(t, err)
	h := &harness{t: t, pool: pool, fake: fake, herald: hd}
	h.registerTokens("author", 1)
	h.run()

	// A host transaction that wrote something and stays open.
	long, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer long.Rollback(ctx) //nolint:errcheck
	var pid int32
	require.NoError(t, long.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = long.Exec(ctx, `CREATE TABLE held_open (id int)`)
	require.NoError(t, err)

	n := h.raise(true, comment("behind-the-long-tx", "ann", "author"))[0]
	require.Eventually(t, func() bool {
		return h.herald.Stats().Relay.OldestTransactionAge > time.Second
	}, 10*time.Second, 50*time.Millisecond)
	assert.Equal(t, pid, h.herald.Stats().Relay.OldestTransactionPID)
	assert.Empty(t, h.statuses(n), "the event waits behind the open transaction")
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "long open transaction") && strings.Contains(logs.String(), fmt.Sprint(pid))
	}, 5*time.Second, 50*time.Millisecond)

	require.NoError(t, long.Rollback(ctx))
	testutil.WaitDelivered(t, pool, n.ID(), 10*time.Second)
}

// OrderShipped is an event type the first deployment does not know.
type OrderShipped struct {
	UserID string `json:"user_id"`
}

func (OrderShipped) EventType() string { return "order_shipped" }

func TestDeadLettersReplayOnceTheRuleExists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("buyer", 1)
	// An event the relay does not know reaches the outbox (say, raised by a
	// newer version of the application).
	_, err := h.pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		VALUES ('from-newer-version', '{"v":1,"events":[{"type":"order_shipped","data":{"user_id":"buyer"},"notifications":[]}]}', '{}', pg_current_xact_id())`)
	require.NoError(t, err)
	h.run()
	pending := func() int {
		dls, err := h.herald.DeadLetters(ctx, true, 10)
		require.NoError(t, err)
		return len(dls)
	}
	require.Eventually(t, func() bool { return pending() == 1 }, 10*time.Second, 20*time.Millisecond)

	// Nothing replays twice: a second call finds nothing to do.
	n, err := h.herald.ReplayAllDeadLetters(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	n, err = h.herald.ReplayAllDeadLetters(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	// Still unknown to this relay, so it is dead-lettered again, as a new
	// entry (the relay's counter moves before its transaction commits, so
	// wait for the row itself).
	var dls []herald.DeadLetter
	require.Eventually(t, func() bool {
		dls, err = h.herald.DeadLetters(ctx, true, 10)
		return err == nil && len(dls) == 1
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, "1", dls[0].Metadata["herald_replay_of"])
	// The counter moves when the handler finishes, before the commit: a
	// handler that outlives its ack deadline on a loaded machine is
	// redelivered and counted again, while its rows commit once.
	assert.GreaterOrEqual(t, h.herald.Stats().Relay.DeadLetters, int64(2))
}

func TestFailedDeliveriesCanBeRetriedOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 2)
	tok := "author-device-0000"
	h.fake.FailToken(tok, testutil.Fault{Code: testutil.FaultInvalidMessage})
	h.run()
	n := h.raise(true, comment("m1", "ann", "author"))[0]
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1, notification.StatusFailed: 1}, 10*time.Second)

	// The operator fixes the cause and retries the failed delivery.
	h.fake.ClearFaults()
	failed, err := h.herald.ListFailed(ctx, 10)
	require.NoError(t, err)
	require.Len(t, failed, 1)
	assert.Equal(t, "INVALID_ARGUMENT", failed[0].ErrorCode())
	changed, err := h.herald.RetryFailed(ctx, []int64{failed[0].ID()})
	require.NoError(t, err)
	assert.Equal(t, 1, changed)
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 2}, 10*time.Second)
	changed, err = h.herald.RetryFailed(ctx, []int64{failed[0].ID()})
	require.NoError(t, err)
	assert.Zero(t, changed, "retrying again changes nothing")
	changed, err = h.herald.RetryAllFailed(ctx)
	require.NoError(t, err)
	assert.Zero(t, changed, "nothing is left failed")
	assert.Len(t, h.fake.AcceptedFor(tok), 1)
}

func TestBadInputIsContained(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 1)

	t.Run("malformed tokens are refused at registration", func(t *testing.T) {
		for _, tok := range []string{"", strings.Repeat("x", notification.MaxTokenLength+1), "has space", "bad\xff"} {
			err := h.herald.Tokens().Register(ctx, "author", tok, notification.PlatformAndroid)
			require.ErrorIs(t, err, notification.ErrInvalidToken)
		}
	})
	h.run()

	t.Run("a recipient with no tokens gets an inbox entry and no push", func(t *testing.T) {
		n := h.raise(true, comment("to-nobody", "ann", "author-without-devices"))[0]
		testutil.WaitIdle(t, h.pool, 10*time.Second)
		assert.Empty(t, h.statuses(n))
		page, err := h.herald.Inbox().List(ctx, "author-without-devices", "", 10)
		require.NoError(t, err)
		assert.Len(t, page.Notifications, 1)
	})

	t.Run("a token removed before the push is not pushed", func(t *testing.T) {
		require.NoError(t, h.herald.Tokens().Register(ctx, "leaver", "leaver-phone", notification.PlatformIOS))
		// Raise while the relay cannot see it yet: hold a write transaction open.
		blocker, err := h.pool.Begin(ctx)
		require.NoError(t, err)
		_, err = blocker.Exec(ctx, `CREATE TEMP TABLE hold (id int)`)
		require.NoError(t, err)
		n := h.raise(true, comment("to-leaver", "ann", "leaver"))[0]
		require.NoError(t, h.herald.Tokens().Unregister(ctx, "leaver-phone"))
		require.NoError(t, blocker.Rollback(ctx))
		testutil.WaitIdle(t, h.pool, 10*time.Second)
		// The token was gone before the relay expanded: no delivery at all.
		assert.Empty(t, h.statuses(n))
		assert.Empty(t, h.fake.AcceptedFor("leaver-phone"))
	})

	t.Run("invalid content is refused at raise, with the field named", func(t *testing.T) {
		rules := notification.NewRules()
		require.NoError(t, notification.On(rules, func(e OrderShipped) ([]notification.Draft, error) {
			return []notification.Draft{{Recipient: e.UserID, Type: "order_shipped", Content: notification.Content{
				Title: "bad \xff", Data: map[string]string{"from": "x", "google.x": "y"}, TTL: 29 * 24 * time.Hour,
			}}}, nil
		}))
		o := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
		tx, err := h.pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		_, err = o.Raise(ctx, tx, OrderShipped{UserID: "author"})
		require.ErrorIs(t, err, notification.ErrInvalidUTF8)
		require.ErrorIs(t, err, notification.ErrReservedDataKey)
		require.ErrorIs(t, err, notification.ErrTTLOutOfRange)
		var fe *notification.FieldError
		require.ErrorAs(t, err, &fe)
		// The transaction is still usable.
		_, err = tx.Exec(ctx, `SELECT 1`)
		require.NoError(t, err)
	})
}

func TestDeliveryForATokenRemovedAfterExpansionIsClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 2)
	// Expand without a sender: run only the relay by raising with no Run,
	// then expanding through a relay of our own.
	relay, err := outbox.NewRelay(h.pool, func() *notification.Rules {
		r := notification.NewRules()
		require.NoError(t, notification.On(r, notification.NotifyCourseAuthor))
		return r
	}(), adapters.RelayStoreIn, outbox.RelayConfig{})
	require.NoError(t, err)
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	n := h.raise(true, comment("m1", "ann", "author"))[0]
	require.Eventually(t, func() bool { return h.statuses(n)[notification.StatusPending] == 2 }, 10*time.Second, 20*time.Millisecond)
	stopRelay()
	require.NoError(t, <-relayDone)

	require.NoError(t, h.herald.Tokens().Unregister(ctx, "author-device-0001"))
	h.run()
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1, notification.StatusTokenPruned: 1}, 10*time.Second)
	d := h.deliveryFor(n, "author-device-0001")
	assert.Equal(t, "TOKEN_REMOVED", d.ErrorCode())
	assert.Empty(t, h.fake.AcceptedFor("author-device-0001"))
}

func TestLogsNeverCarryTokensOrBodies(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	cfg := fastConfig()
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := newHarness(t, cfg)
	secretTokens := []string{"secret-token-ok", "secret-token-dead", "secret-token-bad", "secret-token-flaky", "secret-token-mismatch"}
	for _, tok := range secretTokens {
		require.NoError(t, h.herald.Tokens().Register(context.Background(), "author", tok, notification.PlatformAndroid))
	}
	h.fake.FailToken("secret-token-dead", testutil.Fault{Code: testutil.FaultUnregistered})
	h.fake.FailToken("secret-token-bad", testutil.Fault{Code: testutil.FaultInvalidMessage})
	h.fake.FailToken("secret-token-flaky", testutil.Fault{Code: testutil.FaultInternal, Times: 1})
	h.fake.FailToken("secret-token-mismatch", testutil.Fault{Code: testutil.FaultSenderIDMismatch})
	_, err := h.pool.Exec(context.Background(), `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		VALUES ('poison', '{"v":1,"events":[{"type":"comment_created","data":{"course_id":"secret-course"},"notifications":[]}]}', '{}', pg_current_xact_id())`)
	require.NoError(t, err)
	h.run()
	ev := comment("m1", "ann", "author")
	ev.CourseTitle = "Secret Course Title"
	ev.CommenterName = "Secret Commenter"
	n := h.raise(true, ev)[0]
	h.waitStatuses(n, map[notification.DeliveryStatus]int{
		notification.StatusSent: 2, notification.StatusTokenPruned: 2, notification.StatusFailed: 1,
	}, 15*time.Second)

	out := logs.String()
	require.NotEmpty(t, out, "the failures above must have been logged")
	for _, secret := range append(secretTokens, "Secret Course Title", "Secret Commenter", "secret-course") {
		assert.NotContains(t, out, secret)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		assert.LessOrEqual(t, len(line), 2048, "a log record stays small: %.200s", line)
	}
}
