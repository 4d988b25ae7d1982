package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// A token that changes owner never receives the previous owner's push,
// even one claimed while the move was under way: a registration statement
// reads the open deliveries to close as of its start, so a delivery the
// relay committed meanwhile, and a claim of it that read the token's owner
// before the move committed, escape it. The delivery then stays claimed,
// to the previous owner, for a token that is now someone else's: the
// sender's check before a push that waited must find it no longer
// current.
func TestATokenThatChangesOwnerNeverReceivesThePreviousOwnersPushClaimedWhileTheMoveWasUnderWay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "shared-phone", notification.PlatformAndroid)

	// Something else holds the token's row (another registration of it,
	// a bulk import's chunk): the move to bob starts, its snapshot taken,
	// and waits.
	holder, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer holder.Rollback(ctx) //nolint:errcheck // test
	_, err = holder.Exec(ctx, `SELECT 1 FROM herald_device_tokens WHERE token = 'shared-phone' FOR UPDATE`)
	require.NoError(t, err)
	moved := make(chan error, 1)
	go func() {
		tok, err := notification.NewDeviceToken("bob", "shared-phone", notification.PlatformAndroid, time.Now())
		if err == nil {
			err = f.tokens.Upsert(ctx, tok)
		}
		moved <- err
	}()
	waitForLockWaiter(t, f.pool)

	// Meanwhile the relay commits a push for alice to that phone, and a
	// sender claims it (the token still reads as hers).
	d := f.deliver("alice", "", "shared-phone")
	claimed, err := f.repo.ClaimDue(ctx, time.Now(), 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.Equal(t, d, claimed[0].Delivery.ID())

	require.NoError(t, holder.Commit(ctx))
	require.NoError(t, <-moved)
	var owner string
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT user_id FROM herald_device_tokens WHERE token = 'shared-phone'`).Scan(&owner))
	require.Equal(t, "bob", owner)

	still, err := f.repo.StillClaimed(ctx, claimed[0].Delivery)
	require.NoError(t, err)
	assert.False(t, still, "alice's push is still current for a phone that is now bob's")
}
