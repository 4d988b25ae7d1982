package outbox_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

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
	_, err := pool.Exec(ctx, `
		CREATE SEQUENCE refusals;
		CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF nextval('refusals') <= 6 THEN
				RAISE EXCEPTION 'refused' USING ERRCODE = 'serialization_failure';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION refuse();`)
	require.NoError(t, err)
	log := &levels{}
	relay, err := outbox.NewRelay(pool, rules, adapters.RelayStoreIn,
		outbox.RelayConfig{PollInterval: 10 * time.Millisecond, Logger: slog.New(log)})
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); assert.NoError(t, relay.Run(runCtx)) }()
	t.Cleanup(func() { cancel(); <-done })

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
