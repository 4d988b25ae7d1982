package herald_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/migrations"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func TestRunOnASchemaBehindLogsOneErrorSayingToMigrateAndStartsOnceMigrated(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	cfg := fastConfig()
	cfg.Logger = slog.New(logs)
	h := newHarness(t, cfg)
	tokens := h.registerTokens("author", 2)
	ctx := context.Background()
	_, err := migrations.Down(ctx, h.pool, 1) // a rolling deploy: the new binary starts before the migration ran
	require.NoError(t, err)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.herald.Run(runCtx) }()
	schemaErrors := func() []slog.Record {
		var out []slog.Record
		for _, r := range logs.since(0, slog.LevelError) {
			if strings.Contains(r.Message, "migrations.Up") {
				out = append(out, r)
			}
		}
		return out
	}
	require.Eventually(t, func() bool { return len(schemaErrors()) > 0 }, 15*time.Second, 20*time.Millisecond,
		"Run logs an ERROR saying to run migrations.Up")
	// Several checks later (one every 2s at most), still one ERROR, and Run waits.
	time.Sleep(5 * time.Second)
	assert.Len(t, schemaErrors(), 1, "the ERROR is logged once, not at every check")
	assert.Len(t, logs.since(0, slog.LevelError), 1, "nothing else failed: no part started on the old schema")
	select {
	case err := <-done:
		t.Fatalf("Run returned on a schema behind instead of waiting for the migration: %v", err)
	default:
	}

	_, err = migrations.Up(ctx, h.pool)
	require.NoError(t, err)
	n := h.raise(true, comment("m1", "ann", "author"))[0]
	testutil.WaitDelivered(t, h.pool, n.ID(), 30*time.Second)
	for _, tok := range tokens {
		assert.Len(t, h.fake.AcceptedFor(tok), 1, tok)
	}
	cancel()
	require.NoError(t, <-done)
}

func TestRunWaitingForItsSchemaStopsCleanlyWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	_, err := migrations.Down(context.Background(), h.pool, 1)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.herald.Run(ctx) }()
	time.Sleep(500 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestRaiseOnAnUnmigratedDatabaseSaysToRunMigrationsUp(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := context.Background()
	all, err := migrations.All()
	require.NoError(t, err)
	_, err = migrations.Down(ctx, pool, len(all))
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `DROP TABLE herald_schema_migrations`)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	h, err := herald.New(pool, nil, rules, fastConfig())
	require.NoError(t, err)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // the failed statement aborted it
	_, err = h.Raise(ctx, tx, comment("m1", "ann", "author"))
	require.ErrorIs(t, err, herald.ErrSchemaBehind)
	var behind *herald.SchemaError
	require.ErrorAs(t, err, &behind)
	assert.Zero(t, behind.Have)
	assert.Equal(t, all[len(all)-1].Version, behind.Want)
	assert.Contains(t, err.Error(), "migrations.Up")
}
