package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// A claimed push carries its token's platform, so that the sender can pause
// the pushes of one platform whose credentials are rejected.
func TestClaimedPushCarriesItsTokensPlatform(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	now := time.Now()
	_, err := pool.Exec(ctx, `
		INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		VALUES ('tok-ios', 'u', 'ios', $1, $1), ('tok-android', 'u', 'android', $1, $1), ('tok-web', 'u', 'web', $1, $1)`, now)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `
		WITH n AS (INSERT INTO herald_notifications (id, recipient, type, title, created_at)
			VALUES (gen_random_uuid(), 'u', 't', 'hello', $1) RETURNING id)
		INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT n.id, t.token, 'pending', $1, $1, $1 FROM n, herald_device_tokens t`, now)
	require.NoError(t, err)

	claimed, err := adapters.NewPostgresDeliveryRepository(pool).ClaimDue(ctx, now, 10, time.Minute)
	require.NoError(t, err)
	got := map[string]notification.Platform{}
	for _, d := range claimed {
		got[d.Message.Token] = d.Message.Platform
	}
	assert.Equal(t, map[string]notification.Platform{
		"tok-ios": notification.PlatformIOS, "tok-android": notification.PlatformAndroid, "tok-web": notification.PlatformWeb,
	}, got)
}
