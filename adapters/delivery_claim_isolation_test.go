package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/testutil"
)

// One claim reads many rows into targets it reuses: each claimed push
// carries its own notification's data, options, badge, trace parent, send
// time and expiry, and nothing of the row read before it. Two rows in
// three set everything (each with data keys of its own), the third sets
// nothing (NULL options, badge, trace parent, send and expiry times; an
// empty data object), so a value that leaked from one row, a map decoded
// into twice or a pointer filled in again would show on another.
func TestAClaimedPushCarriesNothingOfAnotherPush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	now := time.Now().Truncate(time.Microsecond)
	const n = 9
	for i := range n {
		user, token := "user-"+string(rune('a'+i)), "tok-"+string(rune('a'+i))
		full := i%3 != 2
		_, err := pool.Exec(ctx, `
			WITH t AS (INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
				VALUES ($2, $1, 'ios', $3, $3)),
			n AS (INSERT INTO herald_notifications (id, recipient, type, title, body, data, created_at, options,
					trace_parent, send_at, expires_at, collapse_key)
				VALUES (gen_random_uuid(), $1, 't', 'title ' || $1, 'body ' || $1,
					CASE WHEN $4 THEN jsonb_build_object('owner', $1, 'secret-' || $1, $1) ELSE '{}' END, $3,
					CASE WHEN $4 THEN jsonb_build_object('apns', jsonb_build_object('badge_unread', true, 'sound', $1),
						'android', jsonb_build_object('tag', $1), 'web', jsonb_build_object('link', 'https://x/' || $1)) END,
					CASE WHEN $4 THEN '00-' || $1 END, CASE WHEN $4 THEN $3 - interval '1 minute' END,
					CASE WHEN $4 THEN $3 + interval '1 day' END, CASE WHEN $4 THEN 'ck-' || $1 END)
				RETURNING id)
			INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
			SELECT n.id, $2, 'pending', $3 - ($5 * interval '1 second'), $3, $3 FROM n`,
			user, token, now, full, n-i)
		require.NoError(t, err)
	}

	claimed, err := adapters.NewPostgresDeliveryRepository(pool).ClaimDue(ctx, now, n, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, n)
	for i, d := range claimed {
		m := d.Message
		k := int(m.Token[len("tok-")] - 'a')
		user, token := "user-"+string(rune('a'+k)), m.Token
		assert.Equal(t, "title "+user, m.Title)
		assert.Equal(t, "body "+user, m.Body)
		if k%3 != 2 {
			assert.Equal(t, map[string]string{"owner": user, "secret-" + user: user}, m.Data, token)
			require.NotNil(t, m.APNs, token)
			assert.Equal(t, user, m.APNs.Sound, token)
			require.NotNil(t, m.Android, token)
			assert.Equal(t, user, m.Android.Tag, token)
			require.NotNil(t, m.Web, token)
			assert.Equal(t, "https://x/"+user, m.Web.Link, token)
			require.NotNil(t, m.Badge, token)
			assert.Equal(t, 1, *m.Badge, "%s: its recipient's own unread count", token)
			assert.Equal(t, "00-"+user, d.TraceParent, token)
			assert.True(t, d.SendAt.Equal(now.Add(-time.Minute)), token)
			assert.True(t, m.ExpiresAt.Equal(now.Add(24*time.Hour)), token)
			assert.Equal(t, "ck-"+user, m.CollapseKey, token)
		} else {
			assert.Empty(t, m.Data, token)
			assert.Nil(t, m.APNs, token)
			assert.Nil(t, m.Android, token)
			assert.Nil(t, m.Web, token)
			assert.Nil(t, m.Badge, token)
			assert.Empty(t, d.TraceParent, token)
			assert.True(t, d.SendAt.IsZero(), token)
			assert.True(t, m.ExpiresAt.IsZero(), token)
			assert.Empty(t, m.CollapseKey, token)
		}
		for j, other := range claimed[:i] {
			if m.Data != nil && other.Message.Data != nil {
				m.Data["probe"] = "x"
				_, shared := other.Message.Data["probe"]
				delete(m.Data, "probe")
				assert.False(t, shared, "pushes %d and %d share one data map", i, j)
			}
			if m.APNs != nil {
				assert.NotSame(t, m.APNs, other.Message.APNs, "pushes %d and %d share APNs options", i, j)
			}
			if m.Badge != nil {
				assert.NotSame(t, m.Badge, other.Message.Badge, "pushes %d and %d share a badge", i, j)
			}
		}
	}
}
