package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestWaitIdleReturnsOnlyOnceEveryRaisedPushIsSent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	tokens := h.registerTokens("author", 3)
	ctx := context.Background()
	idle, err := h.herald.Idle(ctx)
	require.NoError(t, err)
	assert.True(t, idle, "nothing raised yet")

	h.raise(true, comment("m1", "ann", "author"))
	idle, err = h.herald.Idle(ctx)
	require.NoError(t, err)
	assert.False(t, idle, "a committed event not yet relayed is work left")
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, h.herald.WaitIdle(short), context.DeadlineExceeded, "nothing runs, so it never gets idle")

	h.run()
	wait, cancelWait := context.WithTimeout(ctx, 30*time.Second)
	defer cancelWait()
	require.NoError(t, h.herald.WaitIdle(wait))
	for _, tok := range tokens {
		assert.Len(t, h.fake.AcceptedFor(tok), 1, "idle means every push was made: %s", tok)
	}
	idle, err = h.herald.Idle(ctx)
	require.NoError(t, err)
	assert.True(t, idle)
}

func TestWaitIdleWaitsForAnEventHeldBackByAnOlderOpenTransaction(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	tokens := h.registerTokens("author", 2)
	ctx := context.Background()
	// A host transaction with a transaction id stays open: the relay cannot
	// read events committed after it began until it ends.
	older, err := h.pool.Begin(ctx)
	require.NoError(t, err)
	defer older.Rollback(ctx) //nolint:errcheck // ended below
	_, err = older.Exec(ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)

	h.raise(true, comment("m1", "ann", "author"))
	h.run()
	idle, err := h.herald.Idle(ctx)
	require.NoError(t, err)
	assert.False(t, idle, "a committed event held back is work left, not idleness")
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	require.ErrorIs(t, h.herald.WaitIdle(short), context.DeadlineExceeded)

	require.NoError(t, older.Rollback(ctx))
	wait, cancelWait := context.WithTimeout(ctx, 30*time.Second)
	defer cancelWait()
	require.NoError(t, h.herald.WaitIdle(wait))
	for _, tok := range tokens {
		assert.Len(t, h.fake.AcceptedFor(tok), 1, tok)
	}
}

func TestWaitIdleNeverReturnsWhileABroadcastStillHasPushesToMake(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, func(a Announcement) ([]notification.Draft, error) {
		return []notification.Draft{{Type: "announcement", Broadcast: &notification.Audience{},
			Content: notification.Content{Title: "News", Body: a.Text}}}, nil
	}))
	hd, err := herald.New(pool, client, rules, fastConfig())
	require.NoError(t, err)
	h := &harness{t: t, pool: pool, fake: fake, herald: hd}
	tokens := h.registerTokens("reader", 3)
	ctx := context.Background()

	// The host's database refuses every delivery for now (a freeze). The
	// relay still relays the event, which writes the broadcast, not its
	// deliveries; the expander's chunk is refused whole and the broadcast
	// is held. No outbox message and no delivery is open, yet every push of
	// the broadcast is still to be made.
	_, err = pool.Exec(ctx, `
		CREATE FUNCTION host_freeze() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'deliveries frozen for maintenance'; END $$;
		CREATE TRIGGER host_freeze BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION host_freeze()`)
	require.NoError(t, err)
	h.run()
	ns := h.raise(true, Announcement{Text: "v2 is out"})
	require.Len(t, ns, 1)
	require.Eventually(t, func() bool {
		var holds int
		err := pool.QueryRow(ctx, `SELECT holds FROM herald_broadcasts WHERE notification_id = $1`, ns[0].ID()).Scan(&holds)
		return err == nil && holds > 0
	}, 30*time.Second, 10*time.Millisecond, "the broadcast is held by the freeze")

	idle, err := h.herald.Idle(ctx)
	require.NoError(t, err)
	assert.False(t, idle, "a broadcast not yet expanded is work left")
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, h.herald.WaitIdle(short), context.DeadlineExceeded)

	_, err = pool.Exec(ctx, `DROP TRIGGER host_freeze ON herald_deliveries`)
	require.NoError(t, err)
	wait, cancelWait := context.WithTimeout(ctx, 30*time.Second)
	defer cancelWait()
	require.NoError(t, h.herald.WaitIdle(wait))
	for _, tok := range tokens {
		assert.Len(t, fake.AcceptedFor(tok), 1, "idle means the broadcast was pushed: %s", tok)
	}
}
