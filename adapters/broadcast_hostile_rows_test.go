package adapters_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// The expander takes the oldest unfinished broadcast first: one row no
// Herald wrote, at the head of the queue, must end or go on, never fail
// every chunk and hold every broadcast behind it.
func TestABroadcastRowNoHeraldWroteNeverHoldsTheBroadcastsBehindIt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sql string }{
		{"a count at the end of bigint", `UPDATE herald_broadcasts SET expanded = 9223372036854775807 WHERE notification_id = $1`},
		{"platforms that are NULL", `UPDATE herald_broadcasts SET platforms = '{NULL}' WHERE notification_id = $1`},
		{"platforms in two dimensions", `UPDATE herald_broadcasts SET platforms = '{{android,ios}}' WHERE notification_id = $1`},
		{"a cursor of odd text", `UPDATE herald_broadcasts SET last_token = E'\u00ff\u2028' || repeat('z', 5000) WHERE notification_id = $1`},
		{"a recipient of odd text", `UPDATE herald_broadcasts SET recipient = repeat('é', 5000) WHERE notification_id = $1`},
		{"a creation at minus infinity", `UPDATE herald_broadcasts SET created_at = '-infinity' WHERE notification_id = $1`},
		{"a send time at infinity", `UPDATE herald_notifications SET send_at = 'infinity' WHERE id = $1`},
		{"a hold until infinity", `UPDATE herald_broadcasts SET held_until = 'infinity', held_at = 'infinity', holds = 2147483647
			WHERE notification_id = $1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newOwnershipFixture(t)
			f.register("ann", "ann-phone", notification.PlatformAndroid)
			f.register("bob", "bob-phone", notification.PlatformIOS)
			var ids []uuid.UUID
			for range 2 {
				id := uuid.New()
				_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
					VALUES ($1, '', 'news', 'for all', '{}', now())`, id)
				require.NoError(t, err)
				_, err = f.pool.Exec(ctx, `INSERT INTO herald_broadcasts (notification_id, created_at) VALUES ($1, clock_timestamp())`, id)
				require.NoError(t, err)
				ids = append(ids, id)
			}
			_, err := f.pool.Exec(ctx, tc.sql, ids[0])
			require.NoError(t, err)
			for range 10 {
				chunk, err := f.repo.ExpandBroadcastChunk(ctx, 1)
				found := chunk.Found
				require.NoError(t, err, "the expander works")
				if !found {
					break
				}
			}
			var n int
			require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE notification_id = $1`, ids[1]).Scan(&n))
			assert.Equal(t, 2, n, "the broadcast behind it reaches everyone")
			var open int
			require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_broadcasts WHERE finished_at IS NULL`).Scan(&open))
			assert.Zero(t, open, "every broadcast ends")
		})
	}
}
