package outbox_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// warnings records the blocking_pid of every long-transaction warning and
// the messages of every record.
type warnings struct {
	mu       sync.Mutex
	pids     []int64
	messages []string
}

func (w *warnings) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *warnings) WithGroup(string) slog.Handler            { return w }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.messages = append(w.messages, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "blocking_pid" {
			w.pids = append(w.pids, a.Value.Int64())
		}
		return true
	})
	return nil
}

func (w *warnings) reported(pid uint32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.pids {
		if p == int64(pid) {
			return true
		}
	}
	return false
}

func (w *warnings) said(message string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.messages {
		if m == message {
			return true
		}
	}
	return false
}

// runRelay runs a relay on pool until the test ends.
func runRelayWithConfig(t *testing.T, pool *pgxpool.Pool, cfg outbox.RelayConfig) *outbox.Relay {
	t.Helper()
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	relay, err := outbox.NewRelay(pool, rules, adapters.RelayStoreIn, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	t.Cleanup(func() { cancel(); assert.NoError(t, <-done) })
	return relay
}

// openWriteTransaction begins a transaction on its own connection and
// gives it an xid, as a host's long write transaction has. It returns the
// backend pid; the transaction rolls back when the test ends.
func openWriteTransaction(t *testing.T, connURL string) uint32 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, connURL)
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(ctx); _ = conn.Close(ctx) })
	return conn.PgConn().PID()
}

func TestTheMonitorNeverReportsHeraldsOwnRelayTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testutil.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	tok, err := notification.NewDeviceToken("author", "author-device-1", notification.PlatformAndroid, time.Now())
	require.NoError(t, err)
	require.NoError(t, adapters.NewPostgresDeviceTokenRepository(pool).Upsert(ctx, tok))

	// A lock that takes no xid holds the relay's expansion inside its
	// transaction (which has one, from locking the consumer group's row).
	blocker, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = blocker.Close(ctx) })
	blockTx, err := blocker.Begin(ctx)
	require.NoError(t, err)
	_, err = blockTx.Exec(ctx, `LOCK TABLE herald_deliveries IN SHARE MODE`)
	require.NoError(t, err)

	log := &warnings{}
	relay := runRelayWithConfig(t, pool, outbox.RelayConfig{
		LongTransactionWarning: 500 * time.Millisecond, AckDeadline: 30 * time.Second,
		Logger: slog.New(log), PollInterval: 10 * time.Millisecond,
	})
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{}).Raise(ctx, tx, notification.CommentCreated{
			CourseID: "c", CourseTitle: "Go", CommentID: "m1", CommenterID: "ann", CommenterName: "Ann", CourseAuthorID: "author"})
		return err
	}))
	var relayPID uint32
	require.Eventually(t, func() bool {
		err := pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND backend_xid IS NOT NULL`).Scan(&relayPID)
		return err == nil
	}, 15*time.Second, 10*time.Millisecond, "the relay's expansion waits for the lock")

	// Another write transaction, younger than the relay's, is reported.
	other := openWriteTransaction(t, dbURL)
	require.Eventually(t, func() bool { return log.reported(other) }, 15*time.Second, 50*time.Millisecond,
		"the monitor reports a long transaction that is not the relay's")
	for range 20 { // the relay's transaction stays the older one meanwhile
		assert.NotEqual(t, int32(relayPID), relay.Stats().OldestTransactionPID)
		time.Sleep(100 * time.Millisecond)
	}
	assert.False(t, log.reported(relayPID), "the relay's own transaction is never reported")

	require.NoError(t, blockTx.Rollback(ctx))
	require.Eventually(t, func() bool { return relay.Stats().Deliveries == 1 }, 15*time.Second, 10*time.Millisecond)
}

func TestANonPrivilegedRelayStillWarnsAboutAnotherRolesLongTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	adminURL := testutil.NewDatabase(t)
	admin, err := pgx.Connect(ctx, adminURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	role := fmt.Sprintf("herald_monitor_%d", time.Now().UnixNano()%1_000_000_000)
	for _, stmt := range []string{
		fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'pw'`, role),
		fmt.Sprintf(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %s`, role),
		fmt.Sprintf(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %s`, role),
	} {
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	u, err := url.Parse(adminURL)
	require.NoError(t, err)
	u.User = url.UserPassword(role, "pw")
	pool, err := pgxpool.New(ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(func() {
		pool.Close()
		_, _ = admin.Exec(context.Background(), fmt.Sprintf(`DROP OWNED BY %s`, role))
		_, _ = admin.Exec(context.Background(), fmt.Sprintf(`DROP ROLE %s`, role))
	})
	var canSee bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')`).Scan(&canSee))
	require.False(t, canSee)

	log := &warnings{}
	relay := runRelayWithConfig(t, pool, outbox.RelayConfig{LongTransactionWarning: time.Second, Logger: slog.New(log)})
	superuser := openWriteTransaction(t, adminURL)
	require.Eventually(t, func() bool { return log.reported(superuser) }, 20*time.Second, 50*time.Millisecond,
		"another role's long transaction is reported without pg_read_all_stats")
	assert.GreaterOrEqual(t, relay.Stats().OldestTransactionAge, time.Second)
	assert.True(t, log.said("the relay's role lacks pg_read_all_stats: the age of another role's long transaction "+
		"is measured from when the relay first saw it, so warnings about it may come later"))
}
