package outbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// An outbox row written by hand with a hundred thousand events of a type
// this process has no rule for (each naming no notification): were each
// dead-lettered on its own, handling the message would outlast the ack
// deadline at every try and nothing behind it would ever move.
func TestAnOutboxRowWithAHundredThousandUnknownEventsNeverStallsTheMessagesBehindIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	rules := livenessRules(t)
	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	addTokens(t, pool, "later", "later-token")

	events := strings.Repeat(`{"type":"from_the_future","notifications":[]},`, 100_000)
	payload := `{"v":1,"events":[` + strings.TrimSuffix(events, ",") + `]}`
	_, err := pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		VALUES ('many-unknown-events', $1, '{}', pg_current_xact_id())`, payload)
	require.NoError(t, err)
	later := raise(t, pool, ob, pingEvent{UserID: "later"})[0]
	runRelay(t, pool, rules)

	waitDeliveries(t, pool, later, 1, 20*time.Second)
	require.Eventually(t, func() bool { return len(deadLetters(t, pool)) == 1 }, 10*time.Second, 20*time.Millisecond)
	dl := deadLetters(t, pool)[0]
	require.Equal(t, "many-unknown-events", dl.MessageUUID)
	require.Contains(t, dl.Reason, "100000 events, more than 1000")
}
