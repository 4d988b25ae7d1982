package opscli_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/internal/opscli"
)

// TestAnOperatorSeesWhyABroadcastIsHeldAndWhenItIsTriedAgain: a broadcast
// whose next chunk the host's database refuses whole (a freeze trigger) is
// held, so that none of it is lost; that used to show only in a log line,
// and `herald status` listed it as expanding, as if all were well. Status
// (text and JSON) and the timeline now say it is held, how many tries in a
// row were refused, when it is tried again and why, the token in the
// host's message shown by its hash; once the host lets Herald write, the
// hold is gone from all of them.
func TestAnOperatorSeesWhyABroadcastIsHeldAndWhenItIsTriedAgain(t *testing.T) {
	ctx := context.Background()
	pool := commandsDatabase(t)
	repo, id := heldBroadcast(t, pool, "secret-device-token")
	hash := herald.TokenHash("secret-device-token")

	out, err := runCommand(ctx, opscli.Status)
	require.NoError(t, err)
	t.Logf("herald status:\n%s", out)
	assert.Regexp(t, `held: the database refused its next chunk whole once, tried again \d{4}-\d\d-\d\dT\S+Z \(`+hash+`: .*deliveries are frozen`, out)
	assert.NotContains(t, out, "secret-device-token", "the token only by its hash")

	out, err = runCommand(ctx, opscli.Status, "-json")
	require.NoError(t, err)
	var st struct {
		Broadcasts []struct {
			HeldUntil  *time.Time `json:"held_until"`
			Holds      int        `json:"holds"`
			HeldReason string     `json:"held_reason"`
		} `json:"broadcasts"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Len(t, st.Broadcasts, 1)
	b := st.Broadcasts[0]
	require.NotNil(t, b.HeldUntil, "held_until says when it is tried again")
	assert.WithinDuration(t, time.Now().Add(time.Second), *b.HeldUntil, 30*time.Second)
	assert.Equal(t, 1, b.Holds)
	assert.Contains(t, b.HeldReason, "deliveries are frozen")
	assert.Contains(t, b.HeldReason, hash)
	assert.NotContains(t, out, "secret-device-token")

	out, err = runCommand(ctx, opscli.Deliveries, "timeline", id.String())
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^Held\s+the database refused every delivery of its next chunk \(once in a row\), so none is skipped; tried again \S+Z: `+hash+`: .*deliveries are frozen`, out)

	// A reason written around Herald is shown cut, not whole.
	_, err = pool.Exec(ctx, `UPDATE herald_broadcasts SET held_reason = repeat('x', 1000000)`)
	require.NoError(t, err)
	out, err = runCommand(ctx, opscli.Status)
	require.NoError(t, err)
	assert.Less(t, len(out), 4096, "a megabyte reason makes no megabyte status")

	// A hold set by hand a day ahead is not one the expander honours (it
	// tries the broadcast at its next turn): not shown held.
	_, err = pool.Exec(ctx, `UPDATE herald_broadcasts SET held_until = now() + interval '1 day'`)
	require.NoError(t, err)
	out, err = runCommand(ctx, opscli.Status)
	require.NoError(t, err)
	assert.NotContains(t, out, "held:")

	// The host lifts the freeze: the next try (after the hold's second)
	// expands the broadcast and the hold is gone.
	_, err = pool.Exec(ctx, `DROP TRIGGER host_freeze ON herald_deliveries`)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := repo.ExpandBroadcastChunk(ctx, 5000)
		require.NoError(t, err)
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE notification_id = $1`, id).Scan(&n))
		return n == 1
	}, 10*time.Second, 50*time.Millisecond, "the broadcast goes on once the host lets Herald write")
	out, err = runCommand(ctx, opscli.Deliveries, "timeline", id.String())
	require.NoError(t, err)
	assert.NotContains(t, out, "Held")
	assert.NotContains(t, out, "frozen")
}

// A held broadcast whose notification is cancelled is finished: it waits
// for nothing, and no page says it is held.
func TestACancelledHeldBroadcastIsNoLongerShownHeld(t *testing.T) {
	ctx := context.Background()
	pool := commandsDatabase(t)
	_, id := heldBroadcast(t, pool, "ann-phone")
	out, err := runCommand(ctx, opscli.Deliveries, "timeline", id.String())
	require.NoError(t, err)
	require.Contains(t, out, "Held", "held before the cancel")

	_, err = runCommand(ctx, opscli.Deliveries, "cancel", id.String())
	require.NoError(t, err)
	out, err = runCommand(ctx, opscli.Deliveries, "timeline", id.String())
	require.NoError(t, err)
	assert.NotContains(t, out, "Held")
	assert.NotContains(t, out, "frozen")
}

// heldBroadcast registers token, sets a host's freeze trigger on
// herald_deliveries whose message quotes the token, and holds a broadcast
// to every device by expanding it once. It returns the repository and the
// broadcast's notification id.
func heldBroadcast(t *testing.T, pool *pgxpool.Pool, token string) (*adapters.PostgresDeliveryRepository, uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	id := uuid.New()
	_, err := pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		VALUES ($1, 'ann', 'android', now(), now())`, token)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `
		CREATE FUNCTION host_freeze() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'deliveries are frozen (%)', NEW.token; END $$;
		CREATE TRIGGER host_freeze BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION host_freeze();`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
		VALUES ($1, '', 'announcement', 'for all', '{}', now())`, id)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO herald_broadcasts (notification_id, created_at) VALUES ($1, now())`, id)
	require.NoError(t, err)
	repo := adapters.NewPostgresDeliveryRepository(pool)
	chunk, err := repo.ExpandBroadcastChunk(ctx, 5000)
	require.NoError(t, err)
	require.True(t, chunk.Held, "the freeze holds the broadcast")
	return repo, id
}
