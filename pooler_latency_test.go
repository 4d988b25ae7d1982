package herald_test

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/testutil"
)

// TestMeasureCommitToPushDirectAndBehindPgBouncer measures, for 40
// notifications one after another, the time from raising one (its
// transaction committed) to the fake FCM accepting its push: directly
// connected (LISTEN on a pool connection), behind PgBouncer polling every
// Pooler.PollInterval (100ms), and behind PgBouncer with Pooler.ListenURL.
// The sender's own poll is its default, 500ms. A measurement, not a check:
// it runs only with HERALD_MEASURE_POOLER=1 (see BENCHMARKS.md).
func TestMeasureCommitToPushDirectAndBehindPgBouncer(t *testing.T) {
	if os.Getenv("HERALD_MEASURE_POOLER") == "" {
		t.Skip("a measurement: set HERALD_MEASURE_POOLER=1 to run it")
	}
	for _, setup := range []string{"direct", "pgbouncer, polling", "pgbouncer, Pooler.ListenURL"} {
		t.Run(setup, func(t *testing.T) {
			direct := testutil.NewDatabase(t)
			url, mode := direct, pgx.QueryExecModeCacheStatement
			if setup != "direct" {
				url, mode = testutil.PoolerURL(t, direct), testutil.PoolerExecMode
			}
			cfg := fastConfig()
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
			cfg.Sender.PollInterval = 500 * time.Millisecond
			if setup == "pgbouncer, Pooler.ListenURL" {
				cfg.Pooler.ListenURL = direct
			}
			h := harnessOn(t, poolOn(t, url, mode), cfg)
			h.registerTokens("author", 1)
			h.run()
			time.Sleep(time.Second)
			var took []time.Duration
			for i := range 40 {
				start := time.Now()
				before := h.fake.AcceptedCount()
				h.raise(true, comment(fmt.Sprintf("c%d", i), "reader", "author"))
				require.Eventually(t, func() bool { return h.fake.AcceptedCount() > before }, 5*time.Second, time.Millisecond)
				took = append(took, time.Since(start))
				time.Sleep(time.Duration(i%7) * 13 * time.Millisecond) // not in step with any poll
			}
			slices.Sort(took)
			t.Logf("%s: raise to push p50 %v, p90 %v, max %v (n=40)", setup,
				took[20].Round(time.Millisecond), took[36].Round(time.Millisecond), took[39].Round(time.Millisecond))
		})
	}
}
