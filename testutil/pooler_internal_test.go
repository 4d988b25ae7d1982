package testutil

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/internal/pgcluster"
)

// recordingTB is a test as the test kit sees it, whose errors, logs and
// cleanups are kept for the real test to look at.
type recordingTB struct {
	testing.TB
	mu       sync.Mutex
	errors   []string
	logs     []string
	cleanups []func()
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// end runs the cleanups, last first, as the end of a test does.
func (r *recordingTB) end() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestAPgBouncerThatDiesFailsTheTestsUsingItSayingHowAndIsBackForTheNext(t *testing.T) {
	t.Parallel()
	if _, err := pgcluster.FindBouncer(""); err != nil {
		t.Skip(err)
	}
	ctx := t.Context()
	cluster, err := StartCluster(ctx, ClusterConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop() })
	b, err := pgcluster.StartBouncer(ctx, cluster, pgcluster.BouncerConfig{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Stop() })
	var restarter bouncerRestarter

	inFlight := &recordingTB{TB: t}
	url := poolerURL(inFlight, b, cluster.URL("postgres"))
	admin, err := pgx.Connect(ctx, b.URL("pgbouncer")+"&default_query_exec_mode=simple_protocol")
	require.NoError(t, err)
	_, _ = admin.Exec(ctx, `SHUTDOWN`) // pgbouncer exits without Stop
	require.Eventually(t, func() bool { n, _ := b.Exits(); return n == 1 }, 10*time.Second, 10*time.Millisecond)
	inFlight.end()
	require.Len(t, inFlight.errors, 1, "the test in flight fails")
	assert.Contains(t, inFlight.errors[0], "the shared pgbouncer died while this test used it")
	assert.Contains(t, inFlight.errors[0], "exit status", "it says how pgbouncer exited")
	assert.Contains(t, inFlight.errors[0], "SHUTDOWN", "it shows the end of pgbouncer's log")

	next := &recordingTB{TB: t}
	require.NoError(t, restarter.revive(next, b))
	require.Len(t, next.logs, 1)
	assert.True(t, strings.HasPrefix(next.logs[0], fmt.Sprintf("testutil: restarted the shared pgbouncer on port %d", b.Port())), next.logs[0])
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err, "the same URL reaches the restarted pgbouncer")
	require.NoError(t, conn.Ping(ctx))
	require.NoError(t, conn.Close(ctx))
	require.NoError(t, restarter.revive(next, b))
	assert.Len(t, next.logs, 1, "a pgbouncer that runs is left alone")
	next.end()
	assert.Empty(t, next.errors)
}
