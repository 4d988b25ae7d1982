package herald_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
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

// poolOn connects a pool of 10 connections to url in exec mode mode, closed
// when the test ends.
func poolOn(t *testing.T, url string, mode pgx.QueryExecMode) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 10
	cfg.ConnConfig.DefaultQueryExecMode = mode
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// harnessOn is newHarness on a pool of the caller's.
func harnessOn(t *testing.T, pool *pgxpool.Pool, cfg herald.Config) *harness {
	t.Helper()
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(context.Background(), fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	h, err := herald.New(pool, client, rules, cfg)
	require.NoError(t, err)
	return &harness{t: t, pool: pool, fake: fake, herald: h}
}

// logged returns the records at level or above whose message contains text.
func logged(logs *logRecorder, level slog.Level, text string) []slog.Record {
	var out []slog.Record
	for _, r := range logs.since(0, level) {
		if strings.Contains(r.Message, text) {
			out = append(out, r)
		}
	}
	return out
}

// slowPollConfig is fastConfig with a sender that, unless woken, looks for
// new deliveries only once a minute: a push within seconds proves that
// something woke it.
func slowPollConfig(logs *logRecorder) herald.Config {
	cfg := fastConfig()
	cfg.Logger = slog.New(logs)
	cfg.Sender.PollInterval = time.Minute
	cfg.Broadcast.PollInterval = time.Minute
	return cfg
}

// deliverOne raises one comment for a user with one device and waits for
// its push.
func deliverOne(t *testing.T, h *harness, within time.Duration) {
	t.Helper()
	h.registerTokens("author", 1)
	time.Sleep(300 * time.Millisecond) // Run has started and made its first claim: only a wake-up claims again
	n := h.raise(true, comment("c1", "reader", "author"))[0]
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, within)
}

func TestBehindPgBouncerAPoolWithPreparedStatementsStopsRunWithATypedError(t *testing.T) {
	t.Parallel()
	// pgx's default mode prepares named statements; PgBouncer 1.18 in
	// transaction mode hands the next round trip to another server session,
	// which does not have them.
	pool := poolOn(t, testutil.PoolerURL(t, testutil.NewDatabase(t)), pgx.QueryExecModeCacheStatement)
	h := harnessOn(t, pool, fastConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := h.herald.Run(ctx)
	require.ErrorIs(t, err, herald.ErrPoolerPreparedStatements, "Run refuses at once, rather than fail at random later")
	var poolerErr *herald.PoolerError
	require.True(t, errors.As(err, &poolerErr))
	assert.Equal(t, pgx.QueryExecModeCacheStatement, poolerErr.ExecMode)
	assert.Contains(t, err.Error(), "QueryExecModeCacheDescribe", "the error says what to configure")
	assert.Less(t, time.Since(start), 10*time.Second)
}

func TestNewRefusesAnExecModeThatCannotEncodeHeraldsArguments(t *testing.T) {
	t.Parallel()
	url := testutil.NewDatabase(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			_, err := herald.New(poolOn(t, url, mode), nil, notification.NewRules(), herald.Config{})
			assert.ErrorIs(t, err, herald.ErrUnsupportedExecMode)
		})
	}
}

func TestBehindPgBouncerWithoutAListenURLHeraldPollsAndSaysSoOnce(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	pool := poolOn(t, testutil.PoolerURL(t, testutil.NewDatabase(t)), pgx.QueryExecModeCacheDescribe)
	h := harnessOn(t, pool, slowPollConfig(logs))
	h.run()
	deliverOne(t, h, 5*time.Second)
	assert.Len(t, logged(logs, slog.LevelWarn, "LISTEN cannot work"), 1,
		"Run says once, at WARN, that it polls because LISTEN cannot work through the pooler")
	assert.Len(t, logged(logs, slog.LevelInfo, "transaction mode"), 1, "Run says it found a transaction pooler")
	assert.Empty(t, logged(logs, slog.LevelInfo, "LISTEN on"), "nothing LISTENs through the pooler")
}

func TestBehindPgBouncerAListenURLWakesTheSenderAtOnce(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	direct := testutil.NewDatabase(t)
	pool := poolOn(t, testutil.PoolerURL(t, direct), pgx.QueryExecModeCacheDescribe)
	cfg := slowPollConfig(logs)
	cfg.Pooler = herald.PoolerConfig{ListenURL: direct, PollInterval: time.Minute}
	h := harnessOn(t, pool, cfg)
	h.run()
	deliverOne(t, h, 5*time.Second)
	assert.Len(t, logged(logs, slog.LevelInfo, "LISTEN on a direct session"), 1)
	assert.Empty(t, logged(logs, slog.LevelWarn, "LISTEN cannot work"))
}

func TestADirectPoolIsNotTakenForAPoolerAndListens(t *testing.T) {
	t.Parallel()
	logs := &logRecorder{}
	pool := poolOn(t, testutil.NewDatabase(t), pgx.QueryExecModeCacheStatement)
	h := harnessOn(t, pool, slowPollConfig(logs))
	h.run()
	deliverOne(t, h, 5*time.Second)
	assert.Len(t, logged(logs, slog.LevelInfo, "LISTEN on a connection of the pool"), 1)
	assert.Empty(t, logged(logs, slog.LevelInfo, "transaction mode"))
	assert.Empty(t, logged(logs, slog.LevelWarn, "LISTEN"), "nothing to warn about")
}

func TestADeclaredTransactionPoolerWithDescribeExecStopsRun(t *testing.T) {
	t.Parallel()
	// Describe exec runs the unnamed statement it described in the round
	// trip before: through a transaction pooler that may be another
	// session's. Declared, Run refuses it even before any probe sees it.
	pool := poolOn(t, testutil.NewDatabase(t), pgx.QueryExecModeDescribeExec)
	cfg := fastConfig()
	cfg.Pooler.Mode = herald.PoolerTransaction
	h := harnessOn(t, pool, cfg)
	err := h.herald.Run(t.Context())
	require.ErrorIs(t, err, herald.ErrPoolerPreparedStatements)
}

func TestBehindPgBouncerARaiseThatLostItsPreparedStatementsSaysWhy(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := poolOn(t, testutil.PoolerURL(t, testutil.NewDatabase(t)), pgx.QueryExecModeCacheStatement)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	h, err := herald.New(pool, nil, rules, fastConfig()) // a web process that only raises
	require.NoError(t, err)
	a, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer a.Release()
	b, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer b.Release()
	raise := func() error {
		tx, err := a.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
		if _, err := h.Raise(ctx, tx, comment("c1", "reader", "author")); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	// The first Raise prepares its statements on the server session it is
	// lent; another transaction then holds that session, so the next Raise
	// runs on a session that has never seen them.
	require.NoError(t, raise())
	held, err := b.Begin(ctx)
	require.NoError(t, err)
	defer held.Rollback(ctx) //nolint:errcheck
	_, err = held.Exec(ctx, `SELECT 1`)
	require.NoError(t, err)
	err = raise()
	require.ErrorIs(t, err, herald.ErrPoolerPreparedStatements)
	var poolerErr *herald.PoolerError
	require.ErrorAs(t, err, &poolerErr)
	assert.Contains(t, err.Error(), "does not exist", "the database's own words are kept")
}

func TestALISTENThatCannotHearThroughPgBouncerTurnsToPollingAndSaysSo(t *testing.T) {
	t.Parallel()
	// Two mistakes a probe or a host can make: a pool declared direct that
	// goes through PgBouncer, and a ListenURL that points at PgBouncer too.
	// Each LISTEN is checked with a NOTIFY sent through the pool, which it
	// never hears through a transaction pooler.
	for _, c := range []struct {
		name   string
		pooler func(pooled string) herald.PoolerConfig
	}{
		{"pool declared direct", func(string) herald.PoolerConfig { return herald.PoolerConfig{Mode: herald.PoolerNone} }},
		{"ListenURL through the pooler", func(pooled string) herald.PoolerConfig { return herald.PoolerConfig{ListenURL: pooled} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			logs := &logRecorder{}
			pooled := testutil.PoolerURL(t, testutil.NewDatabase(t))
			cfg := slowPollConfig(logs)
			cfg.Pooler = c.pooler(pooled)
			h := harnessOn(t, poolOn(t, pooled, pgx.QueryExecModeCacheDescribe), cfg)
			h.run()
			deliverOne(t, h, 15*time.Second)
			assert.Len(t, logged(logs, slog.LevelWarn, "LISTEN did not hear"), 1)
		})
	}
}
