package herald_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// TestOperatorActionsActOnlyOnTheIdsGiven: an operator's retry or replay
// with an empty id list (a script whose query found nothing) changes
// nothing; retrying and replaying everything takes the ...All methods.
// Listing refuses a limit that is not positive instead of guessing.
func TestOperatorActionsActOnlyOnTheIdsGiven(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	tok := h.registerTokens("author", 1)[0]
	h.fake.FailToken(tok, testutil.Fault{Code: testutil.FaultInvalidMessage})
	// An event no rule knows: the relay dead-letters it.
	_, err := h.pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
		VALUES ('unknown-event', '{"v":1,"events":[{"type":"order_shipped","data":{},"notifications":[]}]}', '{}', pg_current_xact_id())`)
	require.NoError(t, err)
	h.run()
	n := h.raise(true, comment("m1", "ann", "author"))[0]
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusFailed: 1}, 10*time.Second)
	var dls []herald.DeadLetter
	require.Eventually(t, func() bool {
		dls, err = h.herald.DeadLetters(ctx, true, 10)
		return err == nil && len(dls) == 1
	}, 10*time.Second, 20*time.Millisecond)
	h.fake.ClearFaults()

	retried, err := h.herald.RetryFailed(ctx, nil)
	require.NoError(t, err)
	assert.Zero(t, retried)
	replayed, err := h.herald.ReplayDeadLetters(ctx, []int64{})
	require.NoError(t, err)
	assert.Zero(t, replayed)
	failed, err := h.herald.ListFailed(ctx, 10)
	require.NoError(t, err)
	require.Len(t, failed, 1, "still failed")
	pending, err := h.herald.DeadLetters(ctx, true, 10)
	require.NoError(t, err)
	assert.Len(t, pending, 1, "still pending")

	_, err = h.herald.ListFailed(ctx, 0)
	assert.Error(t, err)
	_, err = h.herald.DeadLetters(ctx, false, -1)
	assert.Error(t, err)

	// Given ids, they act on those.
	replayed, err = h.herald.ReplayDeadLetters(ctx, []int64{dls[0].ID})
	require.NoError(t, err)
	assert.Equal(t, 1, replayed)
	all, err := h.herald.DeadLetters(ctx, false, 10)
	require.NoError(t, err)
	var replayedAt time.Time
	for _, dl := range all {
		if dl.ID == dls[0].ID {
			replayedAt = dl.ReplayedAt
		}
	}
	assert.False(t, replayedAt.IsZero(), "the dead letter given is marked replayed")
	retried, err = h.herald.RetryFailed(ctx, []int64{failed[0].ID()})
	require.NoError(t, err)
	assert.Equal(t, 1, retried)
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 10*time.Second)
	counts, err := h.herald.CountDeliveries(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, counts[notification.StatusSent])
}

// TestConfigNowStampsTheInboxsReadTimesAndTheDatabaseItsCreationTimes:
// the clock a host sets in Config is the one its users see on the time
// they read a notification. The creation time, which orders the inbox and
// decides which notification of a collapse key is newest, is the
// database's, shared by every replica whatever their clocks (see
// TestTheNewestNotificationWinsWhateverTheClockOfTheReplicaThatRaisedIt);
// Raise returns it as stored.
func TestConfigNowStampsTheInboxsReadTimesAndTheDatabaseItsCreationTimes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	at := time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)
	cfg := fastConfig()
	cfg.Now = func() time.Time { return at }
	h := newHarness(t, cfg)
	raised := h.raise(true, comment("m1", "ann", "author"))
	require.Len(t, raised, 1)
	require.NoError(t, h.herald.Inbox().MarkRead(ctx, "author", raised[0].ID()))
	page, err := h.herald.Inbox().List(ctx, "author", "", 10)
	require.NoError(t, err)
	require.Len(t, page.Notifications, 1)
	n := page.Notifications[0]
	assert.True(t, at.Equal(n.ReadAt()), "read at %s", n.ReadAt())
	var dbNow time.Time
	require.NoError(t, h.pool.QueryRow(ctx, `SELECT now()`).Scan(&dbNow))
	assert.WithinDuration(t, dbNow, n.CreatedAt(), time.Minute, "created by the database's clock")
	assert.True(t, raised[0].CreatedAt().Equal(n.CreatedAt()), "Raise returned %s, stored %s", raised[0].CreatedAt(), n.CreatedAt())
}

// TestListingDeadLettersNeverLoadsTheirWholePayloads: a dead letter may
// keep a malformed outbox message of up to 16 MiB whole. The console's page
// and `herald deadletters list` list up to 100 and 50 of them, to show their
// reason and size: loading every payload made one page load gigabytes. A
// listing carries at most the first 64 KiB of each payload and its size;
// replaying reads the whole payload on its own.
func TestListingDeadLettersNeverLoadsTheirWholePayloads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	const size = 2 << 20
	_, err := h.pool.Exec(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason)
		SELECT 'herald_outbox', 'm' || i, decode(repeat('ab', $1), 'hex'), 'malformed'
		FROM generate_series(1, 5) i`, size)
	require.NoError(t, err)

	dls, err := h.herald.DeadLetters(ctx, true, 100)
	require.NoError(t, err)
	require.Len(t, dls, 5)
	for _, dl := range dls {
		assert.Equal(t, 64<<10, len(dl.Payload), "the first 64 KiB")
		assert.Equal(t, []byte{0xab, 0xab}, dl.Payload[:2])
		assert.Equal(t, size, dl.PayloadBytes, "the whole payload's size")
	}
}
