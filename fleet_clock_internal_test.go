package herald

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// Fencing and leadership measure real time since the last heartbeat, as the
// other instances do on the database's clock: an application clock that
// stands still, is moved by a test or steps back (a wall clock without
// Go's monotonic reading) neither keeps an instance whose heartbeats
// stopped pushing nor keeps it leading.
func TestAnInstanceWhoseHeartbeatStoppedIsFencedWhateverTheApplicationsClockSays(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	frozen := time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)
	h, err := New(pool, client, notification.NewRules(), Config{
		Now:   func() time.Time { return frozen },
		Fleet: FleetConfig{HeartbeatInterval: 100 * time.Millisecond, DeadAfter: 500 * time.Millisecond},
	})
	require.NoError(t, err)

	require.NoError(t, h.membership.Join(ctx))
	t.Cleanup(func() { h.membership.Leave(ctx) })
	require.True(t, h.membership.Live())
	require.True(t, h.membership.Leader(), "alone, it leads")

	time.Sleep(600 * time.Millisecond) // no heartbeat for longer than DeadAfter
	assert.False(t, h.membership.Live(), "the others may take it for dead: it starts no push")
	assert.False(t, h.membership.Leader(), "its lease has ended on the database")
}
