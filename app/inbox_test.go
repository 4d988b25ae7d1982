package app_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

func seedInbox(t *testing.T, user string, n int) (*app.Inbox, []uuid.UUID) {
	t.Helper()
	pool := testutil.NewPool(t)
	repo := adapters.NewPostgresNotificationRepository(pool)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ns []*notification.Notification
	var ids []uuid.UUID
	for i := range n {
		nt, err := notification.NewNotification(uuid.New(), notification.Draft{Recipient: user, Type: "t",
			Content: notification.Content{Title: fmt.Sprintf("n%d", i)}}, base)
		require.NoError(t, err)
		ns = append(ns, nt)
		ids = append(ids, nt.ID())
	}
	other, err := notification.NewNotification(uuid.New(), notification.Draft{Recipient: "someone-else", Type: "t",
		Content: notification.Content{Title: "not yours"}}, base)
	require.NoError(t, err)
	ns = append(ns, other)
	require.NoError(t, pgx.BeginFunc(context.Background(), pool, func(tx pgx.Tx) error {
		// The database stamps each statement's notifications with one
		// time: added in pairs, pairs share a timestamp, so the cursor must
		// break ties by id, and each pair is newer than the one before.
		for start := 0; start < len(ns); start += 2 {
			if _, err := adapters.NewPostgresNotificationRepository(tx).Add(context.Background(), ns[start:min(start+2, len(ns))]); err != nil {
				return err
			}
		}
		return nil
	}))
	return app.NewInbox(repo, nil), ids
}

func TestInboxPagesNewestFirstWithoutGapsOrRepeats(t *testing.T) {
	t.Parallel()
	inbox, _ := seedInbox(t, "u1", 25)
	ctx := context.Background()
	var titles []string
	cursor := ""
	pages := 0
	for {
		page, err := inbox.List(ctx, "u1", cursor, 7)
		require.NoError(t, err)
		pages++
		for _, n := range page.Notifications {
			titles = append(titles, n.Content().Title)
			assert.Equal(t, "u1", n.Recipient())
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	assert.Equal(t, 4, pages)
	require.Len(t, titles, 25)
	seen := map[string]bool{}
	for _, title := range titles {
		require.False(t, seen[title], "repeated %s", title)
		seen[title] = true
	}
	assert.Contains(t, []string{"n24", "n25"}, titles[0], "newest first")
}

func TestInboxReadState(t *testing.T) {
	t.Parallel()
	inbox, ids := seedInbox(t, "u1", 3)
	ctx := context.Background()
	unread, err := inbox.CountUnread(ctx, "u1")
	require.NoError(t, err)
	assert.Equal(t, 3, unread)

	require.NoError(t, inbox.MarkRead(ctx, "u1", ids[0]))
	require.NoError(t, inbox.MarkRead(ctx, "u1", ids[0]), "marking twice is fine")
	unread, err = inbox.CountUnread(ctx, "u1")
	require.NoError(t, err)
	assert.Equal(t, 2, unread)

	err = inbox.MarkRead(ctx, "intruder", ids[1])
	require.ErrorIs(t, err, notification.ErrNotFound, "nobody marks another user's notification")

	n, err := inbox.MarkAllRead(ctx, "u1")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	unread, err = inbox.CountUnread(ctx, "u1")
	require.NoError(t, err)
	assert.Zero(t, unread)
}

func TestInboxRejectsForeignCursors(t *testing.T) {
	t.Parallel()
	inbox, _ := seedInbox(t, "u1", 1)
	_, err := inbox.List(context.Background(), "u1", "not-a-cursor", 10)
	require.ErrorIs(t, err, app.ErrInvalidCursor)
}

// TestAnInboxCallWithoutAUserIDSeesAndChangesNothing: a broadcast is stored
// with the empty recipient, so an inbox call for the user "" (a host's
// unauthenticated session, an unset claim) read every broadcast's content
// and marked them read. A user id Herald would never store (empty, not
// UTF-8, with NUL, too long) is refused as Preferences().Set and ForgetUser
// refuse it, before any query.
func TestAnInboxCallWithoutAUserIDSeesAndChangesNothing(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	repo := adapters.NewPostgresNotificationRepository(pool)
	inbox := app.NewInbox(repo, nil)
	ctx := context.Background()
	b, err := notification.NewNotification(uuid.New(), notification.Draft{Type: "announcement",
		Broadcast: &notification.Audience{}, Content: notification.Content{Title: "for every device"}}, time.Now())
	require.NoError(t, err)
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := adapters.NewPostgresNotificationRepository(tx).Add(ctx, []*notification.Notification{b})
		return err
	}))

	for _, user := range []string{"", "bad\xffutf8", "nul\x00user", strings.Repeat("u", notification.MaxRecipientLength+1)} {
		page, err := inbox.List(ctx, user, "", 10)
		var fe *notification.FieldError
		require.ErrorAs(t, err, &fe, "List(%q)", user)
		assert.Empty(t, page.Notifications)
		_, err = inbox.CountUnread(ctx, user)
		require.ErrorAs(t, err, &fe, "CountUnread(%q)", user)
		require.ErrorAs(t, inbox.MarkRead(ctx, user, b.ID()), &fe, "MarkRead(%q)", user)
		n, err := inbox.MarkAllRead(ctx, user)
		require.ErrorAs(t, err, &fe, "MarkAllRead(%q)", user)
		assert.Zero(t, n)
	}
	_, err = inbox.List(ctx, "", "", 10)
	require.ErrorIs(t, err, notification.ErrRequired)
	stored, err := repo.Get(ctx, b.ID())
	require.NoError(t, err)
	assert.False(t, stored.IsRead(), "the broadcast was marked read by nobody")
}

// TestACursorHeraldCouldNotHaveMadeIsErrInvalidCursor: a forged cursor
// whose time Postgres cannot hold was a database error (a 500 for the
// host, "timestamp out of range" in its logs), not ErrInvalidCursor. And a
// cursor of another user's inbox only positions the caller in their own.
func TestACursorHeraldCouldNotHaveMadeIsErrInvalidCursor(t *testing.T) {
	t.Parallel()
	inbox, _ := seedInbox(t, "u1", 3)
	ctx := context.Background()
	for _, micros := range []int64{math.MinInt64, -210866803200000001, math.MinInt64 / 2} {
		b := make([]byte, 24)
		binary.BigEndian.PutUint64(b, uint64(micros))
		_, err := inbox.List(ctx, "u1", base64.RawURLEncoding.EncodeToString(b), 10)
		require.ErrorIs(t, err, app.ErrInvalidCursor, "cursor at %d µs", micros)
	}
	// The earliest time Postgres holds is a cursor it can answer.
	page, err := inbox.List(ctx, "u1", app.InboxCursor{CreatedAt: time.UnixMicro(-210866803200000000)}.String(), 10)
	require.NoError(t, err)
	assert.Empty(t, page.Notifications)
	// A huge cursor, and one that is not even text.
	_, err = inbox.List(ctx, "u1", strings.Repeat("A", 1<<20), 10)
	require.ErrorIs(t, err, app.ErrInvalidCursor)
	_, err = inbox.List(ctx, "u1", "\xff\xfe\x00", 10)
	require.ErrorIs(t, err, app.ErrInvalidCursor)

	// someone-else's cursor, forged from their notification's position:
	// u1 still sees only u1's.
	page, err = inbox.List(ctx, "someone-else", "", 1)
	require.NoError(t, err)
	require.Len(t, page.Notifications, 1)
	theirs := page.Notifications[0]
	cursor := app.InboxCursor{CreatedAt: theirs.CreatedAt().Add(time.Hour), ID: theirs.ID()}.String()
	page, err = inbox.List(ctx, "u1", cursor, 10)
	require.NoError(t, err)
	require.Len(t, page.Notifications, 3)
	for _, n := range page.Notifications {
		assert.Equal(t, "u1", n.Recipient())
	}
	for _, limit := range []int{0, -1, math.MinInt, math.MaxInt} {
		page, err := inbox.List(ctx, "u1", "", limit)
		require.NoError(t, err, "limit %d", limit)
		assert.Len(t, page.Notifications, 3)
	}
}
