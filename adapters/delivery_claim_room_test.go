package adapters_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// Deliveries a claim closes (their token gone) must not take the room of
// the due ones behind them: a claim that comes back short tells the sender
// nothing more is due, and it would then sleep a poll interval per batch.
func TestDeliveriesClosedByAClaimDoNotShortenIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	for i := range 30 {
		f.deliver("alice", "", fmt.Sprintf("gone-%02d", i)) // never registered: closed by the claim
	}
	time.Sleep(10 * time.Millisecond) // the live ones come due after the dead ones
	f.register("alice", "phone", notification.PlatformAndroid)
	for range 10 {
		f.deliver("alice", "", "phone")
	}
	claimed, err := f.repo.ClaimDue(ctx, time.Now(), 20, time.Minute)
	require.NoError(t, err)
	assert.Len(t, claimed, 10, "every live delivery behind the closed ones is claimed in one call")
	var closed int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE status = 'token_pruned'`).Scan(&closed))
	assert.Equal(t, 30, closed)
}
