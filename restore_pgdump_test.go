package herald_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// pgTool finds a Postgres client binary: in PATH, else the highest
// version under /usr/lib/postgresql.
func pgTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(found) == 0 {
		t.Skipf("%s not found", name)
	}
	slices.Sort(found)
	return found[len(found)-1]
}

// TestEventsRaisedAfterAPgDumpAndPgRestoreAreDelivered restores Herald's
// database with pg_dump and pg_restore into a new cluster whose
// transaction ids are behind the old one's, as a move to a new server is.
func TestEventsRaisedAfterAPgDumpAndPgRestoreAreDelivered(t *testing.T) {
	t.Parallel()
	pgDump, pgRestore := pgTool(t, "pg_dump"), pgTool(t, "pg_restore")
	ctx := context.Background()
	old := newHarness(t, fastConfig())
	old.registerTokens("before", 2)
	old.registerTokens("unconsumed", 2)
	old.registerTokens("after", 2)

	// The new cluster starts near xid 750; the old one has lived longer:
	// its ids are well past what the new one reaches during the test.
	_, err := old.pool.Exec(ctx, `CREATE PROCEDURE burn_xids(n int) LANGUAGE plpgsql AS $$
		BEGIN
			FOR i IN 1..n LOOP
				PERFORM pg_current_xact_id();
				COMMIT;
			END LOOP;
		END $$`)
	require.NoError(t, err)
	var next int64
	require.NoError(t, old.pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&next))
	if next < 30_000 {
		_, err = old.pool.Exec(ctx, `CALL burn_xids($1)`, 30_000-next)
		require.NoError(t, err)
	}

	// On the old server: one event delivered, one committed while Herald
	// was stopped (in the dump, not yet consumed).
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- old.herald.Run(runCtx) }()
	before := old.raise(true, comment("c0", "ann", "before"))[0]
	testutil.WaitDelivered(t, old.pool, before.ID(), 10*time.Second)
	stop()
	require.NoError(t, <-done)
	unconsumed := old.raise(true, comment("c1", "ann", "unconsumed"))[0]

	dump := filepath.Join(t.TempDir(), "herald.dump")
	oldURL := old.pool.Config().ConnString()
	out, err := exec.Command(pgDump, "--format=custom", "--no-owner", "--file="+dump, "--dbname="+oldURL).CombinedOutput()
	require.NoError(t, err, string(out))

	cluster, err := testutil.StartCluster(ctx, testutil.ClusterConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop() })
	admin, err := pgx.Connect(ctx, cluster.URL("postgres"))
	require.NoError(t, err)
	_, err = admin.Exec(ctx, `CREATE DATABASE restored`)
	require.NoError(t, err)
	require.NoError(t, admin.Close(ctx))
	out, err = exec.Command(pgRestore, "--no-owner", "--exit-on-error", "--dbname="+cluster.URL("restored"), dump).CombinedOutput()
	require.NoError(t, err, string(out))

	pool, err := pgxpool.New(ctx, cluster.URL("restored"))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	var ahead bool
	var stored, xmax string
	require.NoError(t, pool.QueryRow(ctx, `SELECT last_processed_transaction_id >= pg_snapshot_xmax(pg_current_snapshot()),
		last_processed_transaction_id::text, pg_snapshot_xmax(pg_current_snapshot())::text
		FROM watermill_offsets_herald_outbox`).Scan(&ahead, &stored, &xmax))
	require.True(t, ahead, "the restored position (%s) is ahead of the new cluster's ids (%s)", stored, xmax)

	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	hd, err := herald.New(pool, client, rules, fastConfig())
	require.NoError(t, err)
	h := &harness{t: t, pool: pool, fake: fake, herald: hd}
	after := h.raise(true, comment("c2", "ann", "after"))[0]
	h.run()

	testutil.WaitDelivered(t, pool, unconsumed.ID(), 20*time.Second)
	testutil.WaitDelivered(t, pool, after.ID(), 20*time.Second)
	testutil.WaitIdle(t, pool, 10*time.Second)
	stats := hd.Stats().Relay
	assert.Equal(t, int64(1), stats.RestoredOffsetsRepaired)
	assert.Equal(t, int64(2), stats.Messages, "the consumed event was not read again")
	for _, user := range []string{"unconsumed", "after"} {
		for i := range 2 {
			tok := user + "-device-000" + string(rune('0'+i))
			assert.Len(t, fake.AcceptedFor(tok), 1, tok)
		}
	}
	assert.Equal(t, int64(4), fake.AcceptedCount(), "nothing for the event delivered before the dump")
	_ = os.Remove(dump)
}
