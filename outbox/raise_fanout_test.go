package outbox_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// bulletinEvent is one event whose rule notifies many users.
type bulletinEvent struct {
	Users int    `json:"users"`
	Text  string `json:"text"`
}

func (bulletinEvent) EventType() string { return "bulletin" }

// TestOneLargeEventNotifyingTwentyThousandUsersIsWrittenToTheOutboxOnce: an
// event's notifications are split across outbox messages of a thousand ids;
// before, each part carried the whole event again, so one event of almost
// 1 MiB that notified 20,000 users wrote 20 MiB to the outbox (a million
// users: a gigabyte, in one statement, in the host's memory), which the relay
// then read and never used.
func TestOneLargeEventNotifyingTwentyThousandUsersIsWrittenToTheOutboxOnce(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := context.Background()
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, func(e bulletinEvent) ([]notification.Draft, error) {
		ds := make([]notification.Draft, e.Users)
		for i := range ds {
			ds[i] = notification.Draft{Recipient: "u" + strconv.Itoa(i), Type: "bulletin", Content: notification.Content{Title: "news"}}
		}
		return ds, nil
	}))
	const users = 20_000
	_, err := pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT 'tok-' || i, 'u' || i, 'android', now(), now() FROM generate_series(0, $1 - 1) i`, users)
	require.NoError(t, err)

	ob := outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	ns, err := ob.Raise(ctx, tx, bulletinEvent{Users: users, Text: strings.Repeat("x", 900<<10)})
	require.NoError(t, err)
	require.Len(t, ns, users)
	require.NoError(t, tx.Commit(ctx))

	var messages, bytes int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(octet_length(payload::text)), 0)
		FROM watermill_herald_outbox`).Scan(&messages, &bytes))
	assert.Equal(t, users/1000, messages, "a thousand notifications per message")
	assert.Less(t, bytes, 2<<20, "the event is written once, not once per message")

	runRelay(t, pool, rules)
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries`).Scan(&n))
		return n == users
	}, 60*time.Second, 50*time.Millisecond, "every user gets the delivery")
	var dead int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM herald_dead_letters`).Scan(&dead))
	assert.Zero(t, dead)
}
