package adapters_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// ownershipFixture is a database with device tokens and helpers to add
// notifications with one pending delivery each, written directly in SQL.
type ownershipFixture struct {
	t      *testing.T
	pool   *pgxpool.Pool
	repo   *adapters.PostgresDeliveryRepository
	tokens *adapters.PostgresDeviceTokenRepository
}

func newOwnershipFixture(t *testing.T) *ownershipFixture {
	pool := testutil.NewPool(t)
	return &ownershipFixture{t: t, pool: pool, repo: adapters.NewPostgresDeliveryRepository(pool),
		tokens: adapters.NewPostgresDeviceTokenRepository(pool)}
}

func (f *ownershipFixture) register(user, token string, platform notification.Platform) {
	f.t.Helper()
	tok, err := notification.NewDeviceToken(user, token, platform, time.Now())
	require.NoError(f.t, err)
	require.NoError(f.t, f.tokens.Upsert(context.Background(), tok))
}

// deliver adds a notification for recipient (a broadcast if audience is not
// empty) and a pending delivery of it to token, due now, and returns the
// delivery's id.
func (f *ownershipFixture) deliver(recipient, audience, token string) int64 {
	f.t.Helper()
	ctx := context.Background()
	id := uuid.New()
	var aud *string
	if audience != "" {
		aud = &audience
	}
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
		VALUES ($1, $2, 'test', 'for ' || $2, $3, now())`, id, recipient, aud)
	require.NoError(f.t, err)
	var did int64
	require.NoError(f.t, f.pool.QueryRow(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		VALUES ($1, $2, 'pending', now(), now(), now()) RETURNING id`, id, token).Scan(&did))
	return did
}

func (f *ownershipFixture) delivery(id int64) (status notification.DeliveryStatus, code string) {
	f.t.Helper()
	require.NoError(f.t, f.pool.QueryRow(context.Background(),
		`SELECT status, error_code FROM herald_deliveries WHERE id = $1`, id).Scan(&status, &code))
	return status, code
}

// A delivery created before its token moved (an expansion racing the
// move) is checked again when it is claimed.
func TestAClaimPushesOnlyToATokenThatStillBelongsToTheRecipient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "alice-phone", notification.PlatformIOS)
	f.register("alice", "sold-phone", notification.PlatformAndroid)
	f.register("carol", "carol-web", notification.PlatformWeb)
	mine := f.deliver("alice", "", "alice-phone")
	moved := f.deliver("alice", "", "sold-phone")
	gone := f.deliver("alice", "", "carol-web") // never alice's, then removed
	broadcast := f.deliver("", `{}`, "sold-phone")
	androidOnly := f.deliver("", `{"platforms":["android"]}`, "sold-phone")
	webOnly := f.deliver("", `{"platforms":["web"]}`, "alice-phone")

	// The token changes hands behind the deliveries' backs (as if they had
	// been created by an expansion that read the registry before the move).
	_, err := f.pool.Exec(ctx, `UPDATE herald_device_tokens SET user_id = 'bob' WHERE token = 'sold-phone'`)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `DELETE FROM herald_device_tokens WHERE token = 'carol-web'`)
	require.NoError(t, err)

	claimed, err := f.repo.ClaimDue(ctx, time.Now(), 100, time.Minute)
	require.NoError(t, err)
	got := map[int64]notification.Platform{}
	for _, d := range claimed {
		got[d.Delivery.ID()] = d.Message.Platform
		assert.Equal(t, d.Delivery.Token(), d.Message.Token)
	}
	assert.Equal(t, map[int64]notification.Platform{
		mine:        notification.PlatformIOS,
		broadcast:   notification.PlatformAndroid, // any current owner may receive a broadcast
		androidOnly: notification.PlatformAndroid,
	}, got)

	for id, want := range map[int64][2]string{
		moved:   {string(notification.StatusTokenMoved), "TOKEN_MOVED"},
		gone:    {string(notification.StatusTokenPruned), "TOKEN_REMOVED"},
		webOnly: {string(notification.StatusTokenMoved), "TOKEN_MOVED"}, // an iOS token, a web-only broadcast
	} {
		status, code := f.delivery(id)
		assert.Equal(t, want, [2]string{string(status), code}, "delivery %d", id)
	}

	// An operator retry cannot bring a moved delivery back.
	_, err = f.pool.Exec(ctx, `UPDATE herald_deliveries SET status = 'failed' WHERE id = $1`, moved)
	require.NoError(t, err)
	n, err := f.repo.RetryFailed(ctx, []int64{moved}, adapters.RetryBatch)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	claimed, err = f.repo.ClaimDue(ctx, time.Now(), 100, time.Minute)
	require.NoError(t, err)
	assert.Empty(t, claimed)
	status, _ := f.delivery(moved)
	assert.Equal(t, notification.StatusTokenMoved, status)
}

// Registering a token to another user closes the previous owner's open
// deliveries at once, the claimed ones included: their sender then finds
// its claim gone and records nothing.
func TestRegisteringATokenToAnotherUserClosesThePreviousOwnersDeliveries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "phone", notification.PlatformAndroid)
	claimedOne := f.deliver("alice", "", "phone")
	claimed, err := f.repo.ClaimDue(ctx, time.Now(), 100, time.Minute)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	pending := f.deliver("alice", "", "phone")
	scheduled := f.deliver("alice", "", "phone")
	_, err = f.pool.Exec(ctx, `UPDATE herald_deliveries SET status = 'retry_scheduled', due_at = now() + interval '1 hour' WHERE id = $1`, scheduled)
	require.NoError(t, err)
	broadcast := f.deliver("", `{}`, "phone")
	alreadyBobs := f.deliver("bob", "", "phone")

	f.register("bob", "phone", notification.PlatformAndroid)
	for _, id := range []int64{claimedOne, pending, scheduled} {
		status, code := f.delivery(id)
		assert.Equal(t, notification.StatusTokenMoved, status, "delivery %d", id)
		assert.Equal(t, "TOKEN_MOVED", code)
	}
	for _, id := range []int64{broadcast, alreadyBobs} {
		status, _ := f.delivery(id)
		assert.Equal(t, notification.StatusPending, status, "delivery %d is still the phone's to receive", id)
	}

	// The sender that held the claim pushed (the residual window) and
	// records: its claim is gone, so the delivery stays token_moved.
	d := claimed[0].Delivery
	require.NoError(t, d.MarkSent("projects/p/messages/1", time.Now()))
	n, err := f.repo.Record(ctx, []*notification.Delivery{d})
	require.NoError(t, err)
	assert.Zero(t, n)
	status, _ := f.delivery(claimedOne)
	assert.Equal(t, notification.StatusTokenMoved, status)

	// A bulk registration moves tokens the same way.
	f.register("alice", "tablet", notification.PlatformIOS)
	onTablet := f.deliver("alice", "", "tablet")
	tok, err := notification.NewDeviceToken("dave", "tablet", notification.PlatformIOS, time.Now())
	require.NoError(t, err)
	require.NoError(t, f.tokens.UpsertMany(ctx, []*notification.DeviceToken{tok}))
	status, _ = f.delivery(onTablet)
	assert.Equal(t, notification.StatusTokenMoved, status)
}

// Unregistering a token closes its open deliveries: nothing is pushed to a
// token after its owner removed it.
func TestUnregisteringATokenClosesItsOpenDeliveries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("alice", "phone", notification.PlatformAndroid)
	open := f.deliver("alice", "", "phone")
	existed, err := f.tokens.Delete(ctx, "phone")
	require.NoError(t, err)
	assert.True(t, existed)
	status, code := f.delivery(open)
	assert.Equal(t, notification.StatusTokenPruned, status)
	assert.Equal(t, "TOKEN_REMOVED", code)
	existed, err = f.tokens.Delete(ctx, "phone")
	require.NoError(t, err)
	assert.False(t, existed)
}
