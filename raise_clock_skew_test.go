package herald_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/herald-push/herald/notification"
)

// TestAScheduledPushIsNeverEarlyWhenRaisedOnAServerWhoseClockRunsAhead: a
// replica whose clock runs two hours ahead raises a notification scheduled
// an hour from now. Before, its clock said the send time had passed, the
// send time was dropped, and the push went out an hour early.
func TestAScheduledPushIsNeverEarlyWhenRaisedOnAServerWhoseClockRunsAhead(t *testing.T) {
	t.Parallel()
	var ahead atomic.Int64
	ahead.Store(int64(2 * time.Hour))
	cfg := fastConfig()
	cfg.Now = clockAt(&ahead)
	h := newDraftHarness(t, cfg)
	h.register("u", "tok", notification.PlatformAndroid)
	h.run()
	d := draft("u", "your trial ends in an hour")
	d.SendAt = time.Now().Add(time.Hour)
	n := h.notify(d)
	h.notify(draft("u", "now"))

	assert.Eventually(t, func() bool { return len(h.fake.AcceptedFor("tok")) == 1 }, 5*time.Second, 20*time.Millisecond,
		"the unscheduled one goes at once")
	time.Sleep(500 * time.Millisecond) // more polls
	assert.Equal(t, map[notification.DeliveryStatus]int{notification.StatusPending: 1}, h.statuses(n), "expanded, held")
	assert.Len(t, h.fake.AcceptedFor("tok"), 1, "nothing early")
	assert.Equal(t, 1, h.countRows(`SELECT count(*) FROM herald_deliveries
		WHERE notification_id = $1 AND due_at > now() + interval '59 minutes'`, n.ID()), "due at its send time")
	assert.Equal(t, []string{"now"}, h.inboxTitles("u"), "not in the inbox before its time")
}
