package herald_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// maxLogLine is the longest log line a test accepts: shippers split or drop
// lines past 16 KiB (Docker's json-file splits there, journald and cloud
// agents drop larger ones), and with them the line that said what went wrong.
const maxLogLine = 4096

// A row no Herald wrote (an event type of a megabyte in a hand-written
// outbox row) or a host's trigger whose refusal quotes a megabyte: each
// reached Herald's warnings whole, a line of megabytes, dropped by the
// shipper. Every line stays within its bound and still says what happened.
func TestAHugeValueInARowOrADatabaseErrorNeverMakesALogLineLongerThanItsBound(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("x", 1<<20)
	tests := []struct {
		name    string
		prepare string
		raise   bool
		says    string
	}{
		{name: "an event type of a megabyte", says: "unknown event type",
			prepare: `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
				VALUES ('huge-type', jsonb_build_object('v', 1, 'events', jsonb_build_array(jsonb_build_object(
					'type', '` + huge + `', 'data', '{}'::jsonb, 'notifications', '[]'::jsonb))), '{}', pg_current_xact_id())`},
		{name: "a host trigger's refusal of a megabyte", says: "expansion failed", raise: true,
			prepare: `CREATE FUNCTION host_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN RAISE EXCEPTION 'refused: %', repeat('y', 1 << 20); END $$;
				CREATE TRIGGER host_refuse BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION host_refuse()`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			cfg := fastConfig()
			cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			h := newHarness(t, cfg)
			h.registerTokens("author", 1)
			_, err := h.pool.Exec(context.Background(), tt.prepare)
			require.NoError(t, err)
			h.run()
			if tt.raise {
				h.raise(true, comment("m1", "ann", "author"))
			}
			require.Eventually(t, func() bool {
				var n int
				require.NoError(t, h.pool.QueryRow(context.Background(), `SELECT count(*) FROM herald_dead_letters`).Scan(&n))
				return n > 0 && strings.Contains(logs.String(), "dead letters")
			}, 20*time.Second, 20*time.Millisecond, "the row is set aside and logged")

			out := logs.String()
			assert.Contains(t, out, tt.says)
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				assert.LessOrEqual(t, len(line), maxLogLine, "a log line stays small: %.300s", line)
			}
		})
	}
}
