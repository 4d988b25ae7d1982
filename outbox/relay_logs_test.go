package outbox_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// levels records each log record's level and message.
type levels struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *levels) WithGroup(string) slog.Handler            { return l }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

func (l *levels) atLeast(level slog.Level) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.records {
		if r.Level >= level {
			out = append(out, r)
		}
	}
	return out
}

// A message the database refuses for a while (here: serialization failures,
// six tries in a row) is retried by the relay and reported as a warning
// once per interval, with a count; no line at error level comes with each
// redelivery.
func TestATransientRelayFailureIsAWarningNotAnErrorPerRedelivery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "u1", "u1-token")
	refuseDeliveries(t, pool, 6)
	log := &levels{}
	runRelayOnly(t, pool, rules, outbox.RelayConfig{PollInterval: 10 * time.Millisecond, Logger: slog.New(log)})

	n := raise(t, pool, ob, pingEvent{UserID: "u1"})[0]
	waitDeliveries(t, pool, n, 1, 60*time.Second)

	var refusals int
	require.NoError(t, pool.QueryRow(ctx, `SELECT last_value FROM refusals`).Scan(&refusals))
	require.Greater(t, refusals, 6, "the message was refused six times before it expanded")
	for _, r := range log.atLeast(slog.LevelError) {
		t.Errorf("logged %s %q", r.Level, r.Message)
	}
	warnings := log.atLeast(slog.LevelWarn)
	assert.NotEmpty(t, warnings, "the retries were reported")
	for _, r := range warnings {
		t.Logf("%s %s %q", r.Time.Format("15:04:05.000"), r.Level, r.Message)
	}
	assert.Less(t, len(warnings), 6, "reported once per interval, not once per try")
}

// refuseDeliveries makes the first n delivery inserts fail with a
// serialization failure (counted in the sequence refusals, which no
// rollback takes back).
func refuseDeliveries(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	_, err := pool.Exec(context.Background(), fmt.Sprintf(`
		CREATE SEQUENCE refusals;
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('refusals') <= %d THEN
				RAISE EXCEPTION 'refused' USING ERRCODE = 'serialization_failure';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION refuse();`, n))
	require.NoError(t, err)
}

// A user reading a notification while the relay supersedes it with a newer
// one of the same collapse key makes the relay's update a serialization
// failure, which only a new transaction clears. The relay starts one at
// once: before, the message was handed back on the same transaction, failed
// the same way each time, and the relay expanded nothing for anyone until
// its ack deadline (here 20 s) rolled the transaction back.
func TestAReadRacingASupersedeHoldsUpTheRelayForANewTransactionNotItsAckDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testutil.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	rules := livenessRules(t)
	onProgress(t, rules)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "u1", "u1-token")
	log := &levels{}
	runRelayOnly(t, pool, rules, outbox.RelayConfig{
		PollInterval: 10 * time.Millisecond, AckDeadline: 20 * time.Second, Logger: slog.New(log)})

	first := raise(t, pool, ob, progressEvent{UserID: "u1"})[0]
	waitDeliveries(t, pool, first, 1, 10*time.Second)

	// The user reads the first while the second is relayed: the read holds
	// the first's row until the relay's update of it waits, then commits.
	// The relay sees an outbox row only once every older transaction has
	// ended, so the read starts after the second is raised; and the relay
	// is kept from the second until the read holds the row, by a lock on
	// its consumer group's offset.
	holdRelay, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = holdRelay.Close(ctx) })
	holdTx, err := holdRelay.Begin(ctx)
	require.NoError(t, err)
	_, err = holdTx.Exec(ctx, `SELECT 1 FROM "watermill_offsets_herald_outbox" FOR UPDATE`)
	require.NoError(t, err)
	second := raise(t, pool, ob, progressEvent{UserID: "u1"})[0]
	reader, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = reader.Close(ctx) })
	readTx, err := reader.Begin(ctx)
	require.NoError(t, err)
	_, err = readTx.Exec(ctx, `UPDATE herald_notifications SET read_at = now() WHERE id = $1`, first.ID())
	require.NoError(t, err)
	require.NoError(t, holdTx.Commit(ctx))
	require.Eventually(t, func() bool {
		var waiting bool
		err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%WITH ns AS MATERIALIZED%')`).Scan(&waiting)
		return err == nil && waiting
	}, 10*time.Second, 10*time.Millisecond, "the relay's supersede waits for the read: %s", activity(t, pool))
	require.NoError(t, readTx.Commit(ctx))
	read := time.Now()

	waitDeliveries(t, pool, second, 1, 30*time.Second)
	took := time.Since(read)
	t.Logf("the second notification expanded %s after the read committed", took.Round(time.Millisecond))
	assert.Less(t, took, 10*time.Second, "the relay waited out its ack deadline")
	var superseded bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT superseded_at IS NOT NULL FROM herald_notifications WHERE id = $1`,
		first.ID()).Scan(&superseded))
	assert.True(t, superseded, "the first is superseded")
	for _, r := range log.atLeast(slog.LevelError) {
		t.Errorf("logged %s %q", r.Level, r.Message)
	}
}

func activity(t *testing.T, pool *pgxpool.Pool) string {
	rows, err := pool.Query(context.Background(), `SELECT coalesce(wait_event_type, '') || ' ' || coalesce(state, '') || ' ' || left(query, 80) FROM pg_stat_activity WHERE datname = current_database()`)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return fmt.Sprint(lines)
}

// stallConn is a connection to the server that holds up, once, the write
// of the statement containing marker for delay, unless its deadline comes
// first (as pgx sets it when a statement's context ends). It counts every
// write or close entering while another write is in progress: two
// goroutines on one pgx connection at once.
type stallConn struct {
	net.Conn
	stall *stall

	mu       sync.Mutex
	deadline time.Time
	moved    chan struct{} // closed when the deadline changes
	writing  bool
}

type stall struct {
	marker   []byte
	delay    time.Duration
	armed    atomic.Bool
	overlaps atomic.Int32
}

func (c *stallConn) enter() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writing {
		c.stall.overlaps.Add(1)
	}
	c.writing = true
}

func (c *stallConn) leave() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writing = false
}

func (c *stallConn) Write(b []byte) (int, error) {
	c.enter()
	defer c.leave()
	if bytes.Contains(b, c.stall.marker) && c.stall.armed.CompareAndSwap(true, false) {
		until := time.Now().Add(c.stall.delay)
		for time.Now().Before(until) {
			c.mu.Lock()
			deadline, moved := c.deadline, c.moved
			c.mu.Unlock()
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				return 0, os.ErrDeadlineExceeded
			}
			wait := time.Until(until)
			if !deadline.IsZero() && time.Until(deadline) < wait {
				wait = time.Until(deadline)
			}
			select {
			case <-time.After(wait):
			case <-moved:
			}
		}
	}
	return c.Conn.Write(b)
}

func (c *stallConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.moved)
	c.moved = make(chan struct{})
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *stallConn) Close() error {
	c.mu.Lock()
	if c.writing {
		c.stall.overlaps.Add(1)
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// When the database is slow to take the statement that abandons a
// transaction, the relay still stops using the subscriber's transaction
// before its ack deadline, when watermill commits or rolls it back from its
// own goroutine: two goroutines on one pgx connection corrupt its state
// (a data race), and the rollback fails with "conn busy", at error level.
func TestARelayAbandoningATransactionOnAStalledDatabaseIsDoneWithItBeforeItsAckDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "u1", "u1-token")
	refuseDeliveries(t, pool, 1)

	const ackDeadline = 3 * time.Second
	st := &stall{marker: []byte("transaction abandoned"), delay: ackDeadline + 1500*time.Millisecond}
	st.armed.Store(true)
	cfg := pool.Config().Copy()
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &stallConn{Conn: c, stall: st, moved: make(chan struct{})}, nil
	}
	stalled, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(stalled.Close)

	log := &levels{}
	runRelayOnly(t, stalled, rules, outbox.RelayConfig{
		PollInterval: 10 * time.Millisecond, AckDeadline: ackDeadline, Logger: slog.New(log)})

	n := raise(t, pool, ob, pingEvent{UserID: "u1"})[0]
	waitDeliveries(t, pool, n, 1, 20*time.Second)
	assert.False(t, st.armed.Load(), "the abandon statement was held up")
	assert.Zero(t, st.overlaps.Load(), "the relay and watermill used one connection at once")
}
