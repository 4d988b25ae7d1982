package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

// MarkAllRead marks in chunks, each picking unread notifications and
// marking them. A row its update leaves unread (a host's trigger keeping
// notifications under legal hold as they are, a row-level security
// policy) was picked again by every chunk: with a chunk's worth of them,
// the call never ended, and the user's other unread notifications were
// never marked.
func TestMarkAllReadEndsAndMarksTheRestWhenTheHostsTriggerKeepsSomeUnread(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := testutil.NewPool(t)
	_, err := pool.Exec(ctx, `
		CREATE FUNCTION host_legal_hold() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.type = 'held' THEN RETURN NULL; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER host_legal_hold BEFORE UPDATE ON herald_notifications
			FOR EACH ROW EXECUTE FUNCTION host_legal_hold()`)
	require.NoError(t, err)
	const held, free = 12_000, 3_000
	// The held ones older and newer than the free ones, so no order of
	// picking reaches the free ones first.
	_, err = pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		SELECT gen_random_uuid(), 'reader', CASE WHEN g % 5 = 0 THEN 't' ELSE 'held' END, 'n',
			now() - interval '1 hour' + g * interval '1 ms'
		FROM generate_series(1, $1) g`, held+free)
	require.NoError(t, err)

	n, err := adapters.NewPostgresNotificationRepository(pool).MarkAllRead(ctx, "reader", time.Now())
	require.NoError(t, err, "MarkAllRead ends")
	assert.Equal(t, free, n)
	var left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM herald_notifications
		WHERE read_at IS NULL AND type <> 'held'`).Scan(&left))
	assert.Zero(t, left, "every notification the host lets Herald mark is marked")
}
