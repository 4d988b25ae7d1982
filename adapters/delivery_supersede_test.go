package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// addCollapsing stores a notification with collapse key "k": each is newer
// than those added before (the database stamps its creation).
func addCollapsing(t *testing.T, pool *pgxpool.Pool, title string) uuid.UUID {
	t.Helper()
	n, err := notification.NewNotification(uuid.Must(uuid.NewV7()), notification.Draft{Recipient: "u", Type: "t",
		Content: notification.Content{Title: title}, CollapseKey: "k"}, time.Now())
	require.NoError(t, err)
	_, err = adapters.NewPostgresNotificationRepository(pool).Add(context.Background(), []*notification.Notification{n})
	require.NoError(t, err)
	return n.ID()
}

// TestASupersededDeliveryIsNeverPushedWhateverItsClaimWasDoing: once a
// newer notification of its collapse key is expanded, a claim closes a
// delivery superseded instead of returning it; one claimed at that moment
// is on its way and left to its sender, and if that push does not happen
// (FCM is down: it is released), the next claim closes it too.
func TestASupersededDeliveryIsNeverPushedWhateverItsClaimWasDoing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	_, err := pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		VALUES ('tok-1', 'u', 'android', now(), now()), ('tok-2', 'u', 'android', now(), now())`)
	require.NoError(t, err)
	repo := adapters.NewPostgresDeliveryRepository(pool)
	now := time.Now()
	first := addCollapsing(t, pool, "first")
	_, err = repo.Expand(ctx, []uuid.UUID{first})
	require.NoError(t, err)
	claimed, err := repo.ClaimDue(ctx, now, 1, time.Minute) // tok-1's is in flight; tok-2's waits
	require.NoError(t, err)
	require.Len(t, claimed, 1)

	second := addCollapsing(t, pool, "second")
	_, err = repo.Expand(ctx, []uuid.UUID{second})
	require.NoError(t, err)
	byToken := func(id uuid.UUID) map[string]notification.DeliveryStatus {
		ds, err := repo.ListForNotification(ctx, id)
		require.NoError(t, err)
		m := map[string]notification.DeliveryStatus{}
		for _, d := range ds {
			m[d.Token()] = d.Status()
		}
		return m
	}
	// The next claim returns the newest only, and closes the other
	// delivery of the first notification; the one claimed before is on
	// its way: its sender decides.
	newest, err := repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, newest, 2)
	for _, c := range newest {
		assert.Equal(t, second, c.Message.NotificationID)
	}
	assert.Equal(t, map[string]notification.DeliveryStatus{
		claimed[0].Message.Token:             notification.StatusClaimed,
		otherToken(claimed[0].Message.Token): notification.StatusSuperseded,
	}, byToken(first))

	// FCM was down: the push is released, due now.
	d := claimed[0].Delivery
	require.NoError(t, d.Release(time.Now(), time.Now()))
	n, err := repo.Record(ctx, []*notification.Delivery{d})
	require.NoError(t, err)
	require.Equal(t, 1, n)

	again, err := repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
	require.NoError(t, err)
	assert.Empty(t, again, "the released one is closed, not returned")
	assert.Equal(t, map[string]notification.DeliveryStatus{
		"tok-1": notification.StatusSuperseded, "tok-2": notification.StatusSuperseded,
	}, byToken(first))
}

func otherToken(tok string) string {
	if tok == "tok-1" {
		return "tok-2"
	}
	return "tok-1"
}

// TestAnExpiredDeliveryIsClosedByTheClaim: a delivery whose notification
// expired is closed expired when it comes due, never returned.
func TestAnExpiredDeliveryIsClosedByTheClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	_, err := pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		VALUES ('tok', 'u', 'ios', now(), now())`)
	require.NoError(t, err)
	n, err := notification.NewNotification(uuid.Must(uuid.NewV7()), notification.Draft{Recipient: "u", Type: "t",
		Content: notification.Content{Title: "x"}, ExpiresAt: time.Now().Add(time.Hour)}, time.Now())
	require.NoError(t, err)
	_, err = adapters.NewPostgresNotificationRepository(pool).Add(ctx, []*notification.Notification{n})
	require.NoError(t, err)
	repo := adapters.NewPostgresDeliveryRepository(pool)
	_, err = repo.Expand(ctx, []uuid.UUID{n.ID()})
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE herald_notifications SET expires_at = now() - interval '1 second'`)
	require.NoError(t, err)
	claimed, err := repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
	require.NoError(t, err)
	assert.Empty(t, claimed)
	ds, err := repo.ListForNotification(ctx, n.ID())
	require.NoError(t, err)
	require.Len(t, ds, 1)
	assert.Equal(t, notification.StatusExpired, ds[0].Status())
	assert.Equal(t, "EXPIRED", ds[0].ErrorCode())
}
