package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
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

// takeRecorder records the payload bytes each TakeForReplay returned.
type takeRecorder struct {
	app.DeadLetterReplayStore
	takes *[]int
}

func (r takeRecorder) TakeForReplay(ctx context.Context, ids []int64, after int64, limit int, now time.Time) ([]app.DeadLetter, error) {
	dls, err := r.DeadLetterReplayStore.TakeForReplay(ctx, ids, after, limit, now)
	size := 0
	for _, dl := range dls {
		size += len(dl.Payload)
	}
	*r.takes = append(*r.takes, size)
	return dls, err
}

// Dead letters may each hold up to a 16 MiB message, and a replay batch
// took 500 of them at once (then republished them in one statement): a
// campaign of large events of an unknown type, or hostile rows, made
// "replay -all" hold gigabytes. A replay transaction now holds a bounded
// amount of payload, and still replays every letter.
func TestReplayingDeadLettersHoldsABoundedAmountOfPayloadAtOnce(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := context.Background()
	const letters, size = 40, 1 << 20
	_, err := pool.Exec(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason, created_at)
		SELECT 'herald_outbox', 'big-' || i,
			convert_to('{"v":1,"events":[{"type":"later","data":"' || repeat('x', $1) || '","notifications":[]}]}', 'UTF8'),
			'unknown', now()
		FROM generate_series(1, $2) i`, size, letters)
	require.NoError(t, err)

	var takes []int
	n, err := outbox.ReplayDeadLetters(ctx, pool, func(tx pgx.Tx) app.DeadLetterReplayStore {
		return takeRecorder{DeadLetterReplayStore: adapters.DeadLettersIn(tx), takes: &takes}
	}, nil)
	require.NoError(t, err)
	assert.Equal(t, letters, n)
	for i, took := range takes {
		assert.LessOrEqual(t, took, app.MaxOutboxMessageBytes, "take %d", i)
	}
	var outboxRows int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM watermill_herald_outbox`).Scan(&outboxRows))
	assert.Equal(t, letters, outboxRows)
}
