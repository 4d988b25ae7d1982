package herald_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// incompressible returns n bytes of token text that Postgres cannot
// compress (it compresses long index entries, which would hide the limit).
func incompressible(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func TestThreeKilobyteTokenIsRefusedAtRegister(t *testing.T) {
	t.Parallel()
	h := newHarness(t, fastConfig())
	err := h.herald.Tokens().Register(context.Background(), "u1", incompressible(t, 3000), notification.PlatformAndroid)
	require.ErrorIs(t, err, notification.ErrInvalidToken)
	var fe *notification.FieldError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "token", fe.Field)
	// The longest token allowed is stored.
	require.NoError(t, h.herald.Tokens().Register(context.Background(), "u1",
		incompressible(t, notification.MaxTokenLength), notification.PlatformAndroid))
}

func TestTokenTooLongWrittenStraightIntoTheTableDoesNotStopLaterEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 1)
	h.registerTokens("other", 1)
	// Someone bypasses Register: the token fits the token table's key but
	// not the deliveries' (notification, token) key.
	_, err := h.pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		VALUES ($1, 'author', 'android', now(), now())`, incompressible(t, 2680))
	require.NoError(t, err)
	h.run()

	first := h.raise(true, comment("m1", "ann", "author"))[0]
	next := h.raise(true, comment("m2", "ann", "other"))[0]
	h.waitStatuses(first, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 15*time.Second)
	h.waitStatuses(next, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 15*time.Second)
}

func TestAnythingInTheOutboxTableIsDeadLetteredAndEveryEventAroundItDelivered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, fastConfig())
	h.registerTokens("author", 1)
	tooMany := make([]string, 1001)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf(`"%s"`, "0190a6b2-0000-7000-8000-000000000000")
	}
	bad := []struct{ uuid, payload, metadata any }{
		{"null-payload", nil, `{}`},
		{"json-null", `null`, `{}`},
		{"json-string", `"hello"`, `{}`},
		{"json-array", `[1,2,3]`, `{}`},
		{"json-number", `42`, nil},
		{"huge", `"` + strings.Repeat("x", 17<<20) + `"`, `{}`},
		{"metadata-array", `{"v":1,"events":[{"type":"comment_created","data":{},"notifications":[]}]}`, `[1,2]`},
		{"metadata-numbers", `{"v":1,"events":[{"type":"comment_created","data":{},"notifications":[]}]}`, `{"a":1}`},
		{"metadata-string", `{"v":1,"events":[{"type":"comment_created","data":{},"notifications":[]}]}`, `"x"`},
		{"metadata-nul", `{}`, `{"a":"\u0000"}`},
		{"", `{"v":1}`, `{}`},
		{"not a uuid at all, thirty-six chars", `{"v":1,"events":[{"type":"comment_created","notifications":[` + strings.Join(tooMany, ",") + `]}]}`, `{}`},
	}
	var events []*notification.Notification
	for i, b := range bad {
		events = append(events, h.raise(true, comment(fmt.Sprintf("before-%d", i), "ann", "author"))[0])
		_, err := h.pool.Exec(ctx, `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
			VALUES ($1, $2, $3, pg_current_xact_id())`, b.uuid, b.payload, b.metadata)
		require.NoError(t, err, "row %d", i)
	}
	events = append(events, h.raise(true, comment("last", "ann", "author"))[0])
	h.run()

	for _, n := range events {
		h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1}, 30*time.Second)
	}
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, h.pool.QueryRow(ctx, `SELECT count(*) FROM herald_dead_letters`).Scan(&n))
		return n == len(bad)
	}, 30*time.Second, 20*time.Millisecond)
	dls, err := h.herald.DeadLetters(ctx, false, 100)
	require.NoError(t, err)
	got := map[string]string{}
	for _, dl := range dls {
		got[dl.MessageUUID] = dl.Reason
	}
	for _, b := range bad {
		assert.Contains(t, got, b.uuid)
	}
	assert.Contains(t, got["metadata-array"], "metadata")
	assert.Contains(t, got["huge"], "over the relay's limit")
	assert.Contains(t, got["not a uuid at all, thirty-six chars"], "more than 1000")

}
