package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// A claim that waited in a sender (a rate limit, a device's hold) is
// checked again before its push: if a newer notification with its collapse
// key superseded it meanwhile, or an operator cancelled it, it is no longer
// to be pushed; the next claim after its lease closes it.
func TestARecheckedClaimIsNotPushedOnceItsNotificationIsSupersededOrCancelled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, column := range []string{"superseded_at", "cancelled_at"} {
		t.Run(column, func(t *testing.T) {
			t.Parallel()
			f := newOwnershipFixture(t)
			f.register("alice", "alice-phone", notification.PlatformAndroid)
			id := f.deliver("alice", "", "alice-phone")
			ds, err := f.repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
			require.NoError(t, err)
			require.Len(t, ds, 1)
			still, err := f.repo.StillClaimed(ctx, ds[0].Delivery)
			require.NoError(t, err)
			require.True(t, still)

			_, err = f.pool.Exec(ctx, `UPDATE herald_notifications SET `+column+` = now()
				WHERE id = (SELECT notification_id FROM herald_deliveries WHERE id = $1)`, id)
			require.NoError(t, err)
			still, err = f.repo.StillClaimed(ctx, ds[0].Delivery)
			require.NoError(t, err)
			assert.False(t, still, "not to be pushed any more")
		})
	}
}
