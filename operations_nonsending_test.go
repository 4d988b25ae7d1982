package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
)

// TestAWebProcessWithoutFCMRaisesAndOperatesAndAnotherSends: a process
// that never sends (a web server, an admin page, the operator CLI) makes
// its Herald with no FCM client. It raises in the host's transaction,
// serves the inbox and tokens and answers every operator action; Run
// refuses with ErrNoFCM; a sending Herald on the same database delivers
// what it raised.
func TestAWebProcessWithoutFCMRaisesAndOperatesAndAnotherSends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sending := newHarness(t, fastConfig())
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	web, err := herald.New(sending.pool, nil, rules, fastConfig())
	require.NoError(t, err)

	require.ErrorIs(t, web.Run(ctx), herald.ErrNoFCM)
	assert.Equal(t, herald.Stats{}, web.Stats())

	require.NoError(t, web.Tokens().Register(ctx, "author", "author-phone", notification.PlatformAndroid))
	tx, err := sending.pool.Begin(ctx)
	require.NoError(t, err)
	ns, err := web.Raise(ctx, tx, comment("m1", "ann", "author"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	require.Len(t, ns, 1)
	page, err := web.Inbox().List(ctx, "author", "", 0)
	require.NoError(t, err)
	require.Len(t, page.Notifications, 1)

	sending.run()
	sending.waitStatuses(ns[0], map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	assert.Len(t, sending.fake.AcceptedFor("author-phone"), 1)

	sent, err := web.ListDeliveriesByStatus(ctx, notification.StatusSent, 10)
	require.NoError(t, err)
	require.Len(t, sent, 1)
	assert.Equal(t, ns[0].ID(), sent[0].NotificationID())
	counts, err := web.CountDeliveries(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, counts)
	failed, err := web.ListFailed(ctx, 10)
	require.NoError(t, err)
	assert.Empty(t, failed)
	dls, err := web.DeadLetters(ctx, false, 10)
	require.NoError(t, err)
	assert.Empty(t, dls)
}

// TestListingDeliveriesByStatusRefusesWhatItCannotAnswer: an operator who
// mistypes a status gets an error, never an empty list that reads as
// "nothing failed"; a limit that is not positive is refused too.
func TestListingDeliveriesByStatusRefusesWhatItCannotAnswer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	for _, tc := range []struct {
		name   string
		status notification.DeliveryStatus
		limit  int
	}{
		{"misspelt status", "faild", 10},
		{"empty status", "", 10},
		{"status with a NUL", "failed\x00", 10},
		{"zero limit", notification.StatusFailed, 0},
		{"negative limit", notification.StatusFailed, -1},
	} {
		_, err := h.herald.ListDeliveriesByStatus(ctx, tc.status, tc.limit)
		assert.Error(t, err, tc.name)
	}
	for _, s := range []notification.DeliveryStatus{
		notification.StatusPending, notification.StatusClaimed, notification.StatusSent,
		notification.StatusRetryScheduled, notification.StatusTokenPruned, notification.StatusTokenMoved,
		notification.StatusFailed,
	} {
		ds, err := h.herald.ListDeliveriesByStatus(ctx, s, 1)
		require.NoError(t, err, s)
		assert.Empty(t, ds, s)
	}
}
