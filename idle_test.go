package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
