package outbox_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// The relay's memory does not grow with the backlog: one subscriber
// transaction reads at most Relay.BatchBytes of payloads (and always the
// first message, however large, so it never stalls), however many large
// messages wait.
func TestTheRelayReadsABacklogOfLargeMessagesInBatchesBoundedInBytes(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := context.Background()
	const kb300 = 300 << 10
	payload := `{"pad":"` + strings.Repeat("x", kb300-10) + `"}`
	for i := range 10 {
		_, err := pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
			VALUES ($1, $2::json, '{}', pg_current_xact_id())`, fmt.Sprintf("00000000-0000-0000-0000-%012d", i), payload)
		require.NoError(t, err)
	}
	rows := func(batchBytes int) (n int, bytes int) {
		q, args, err := outbox.RelaySelect(100, batchBytes)
		require.NoError(t, err)
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck // read only
		rs, err := tx.Query(ctx, q, args...)
		require.NoError(t, err)
		defer rs.Close()
		for rs.Next() {
			vals, err := rs.Values()
			require.NoError(t, err)
			n++
			bytes += len(fmt.Sprint(vals[3]))
		}
		require.NoError(t, rs.Err())
		return n, bytes
	}
	// The relay's consumer group has read nothing yet.
	_, err := pool.Exec(ctx, `INSERT INTO watermill_offsets_herald_outbox (consumer_group, offset_acked, last_processed_transaction_id)
		VALUES ($1, 0, '0') ON CONFLICT DO NOTHING`, outbox.ConsumerGroup)
	require.NoError(t, err)
	// The relay sees a message once every transaction older than it ended,
	// in the whole cluster (other tests' too).
	require.Eventually(t, func() bool { n, _ := rows(0); return n == 10 }, 30*time.Second, 20*time.Millisecond,
		"no byte budget: the batch size alone")
	n, size := rows(1 << 20)
	assert.Equal(t, 4, n, "300 KB messages: 0, 300, 600 and 900 KB come before the fourth, under 1 MiB")
	assert.Less(t, size, 4*kb300+1024)
	n, _ = rows(100 << 10)
	assert.Equal(t, 1, n, "a message larger than the budget still comes, alone")
}
