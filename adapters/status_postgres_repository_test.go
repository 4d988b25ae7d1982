package adapters_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// TestStatusEstimatesWhatItCannotCountCheaply: on a large table (here,
// large by a lowered threshold) the status counts the open and failed
// deliveries, which their partial indexes reach, and estimates the
// finished ones from the planner's statistics instead of counting
// millions of rows, and says which is which.
func TestStatusEstimatesWhatItCannotCountCheaply(t *testing.T) {
	ctx := context.Background()
	pool := testutil.NewPool(t)
	for _, sql := range []string{
		`INSERT INTO herald_notifications (id, recipient, type, created_at) VALUES ('00000000-0000-0000-0000-000000000001', 'u', 't', now())`,
		`INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
			SELECT '00000000-0000-0000-0000-000000000001', 'tok-' || g,
				CASE WHEN g <= 10 THEN 'failed' WHEN g <= 15 THEN 'pending' ELSE 'sent' END, now(), now(), now()
			FROM generate_series(1, 3000) g`,
		`ANALYZE herald_deliveries`,
	} {
		_, err := pool.Exec(ctx, sql)
		require.NoError(t, err)
	}
	repo := adapters.NewPostgresStatusRepository(pool)

	exact, err := repo.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, []app.StatusCount{
		{Status: notification.StatusPending, Count: 5},
		{Status: notification.StatusSent, Count: 2985},
		{Status: notification.StatusFailed, Count: 10},
	}, exact.Deliveries, "a small table is counted exactly")

	adapters.SetExactCountBelow(t, 1000)
	s, err := repo.Status(ctx)
	require.NoError(t, err)
	require.Len(t, s.Deliveries, 3, "%+v", s.Deliveries)
	assert.Equal(t, app.StatusCount{Status: notification.StatusPending, Count: 5}, s.Deliveries[0])
	sent := s.Deliveries[1]
	assert.Equal(t, notification.StatusSent, sent.Status)
	assert.True(t, sent.Estimated)
	assert.InDelta(t, 2985, sent.Count, 100)
	assert.Equal(t, app.StatusCount{Status: notification.StatusFailed, Count: 10}, s.Deliveries[2])
	assert.Equal(t, int64(5), s.DueNow)
}
