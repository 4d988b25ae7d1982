package outbox_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// A dead letter that cannot go back on the topic (a NULL row from the
// outbox) must not stop an operator from replaying the others, and replay
// works through any number of letters in bounded batches.
func TestOneUnreplayableDeadLetterDoesNotBlockReplayingTheOthers(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason, created_at)
		VALUES ('herald_outbox', 'null-row', ''::bytea, 'no payload', now())`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason, created_at)
		SELECT 'herald_outbox', 'later-' || i,
			convert_to('{"v":1,"events":[{"type":"later","data":{},"notifications":[]}]}', 'UTF8'), 'unknown', now()
		FROM generate_series(1, 1200) i`)
	require.NoError(t, err)

	n, err := outbox.ReplayDeadLetters(ctx, pool, adapters.DeadLettersIn, nil)
	require.NoError(t, err)
	assert.Equal(t, 1200, n, "every replayable letter, past the batch size")
	var outboxRows, pending int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM watermill_herald_outbox`).Scan(&outboxRows))
	assert.Equal(t, 1200, outboxRows)
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM herald_dead_letters WHERE replayed_at IS NULL`).Scan(&pending))
	assert.Equal(t, 1, pending, "the unreplayable letter stays for an operator to inspect")

	n, err = outbox.ReplayDeadLetters(ctx, pool, adapters.DeadLettersIn, nil)
	require.NoError(t, err)
	assert.Zero(t, n, "nothing replays twice")
}
