package adapters_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// A host's freeze trigger refusing every delivery while a broadcast's next
// chunk is a single token (a broadcast to one device, the tail of a
// broadcast, a recipient's last device) used to count that token refused and
// skip it: its push was lost for good. The broadcast is held instead,
// nothing skipped or counted, and the token gets its delivery once the host
// lets Herald write again.
func TestAFreezeOnAOneTokenChunkLosesNoDelivery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		tokens []string
		limit  int
		before int // chunks expanded before the freeze starts
	}{
		{"a broadcast to one device", []string{"ann-phone"}, 5000, 0},
		{"the tail of a broadcast, the freeze starting between two chunks", []string{"ann-phone", "bob-phone", "cid-phone"}, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newOwnershipFixture(t)
			for _, tok := range tc.tokens {
				f.register(tok, tok, notification.PlatformAndroid)
			}
			id := addBroadcast(t, f)
			for range tc.before {
				chunk, err := f.repo.ExpandBroadcastChunk(ctx, tc.limit)
				require.NoError(t, err)
				require.True(t, chunk.Found)
			}
			_, err := f.pool.Exec(ctx, `
				CREATE FUNCTION host_freeze() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN RAISE EXCEPTION 'deliveries are frozen'; END $$;
				CREATE TRIGGER host_freeze BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION host_freeze();`)
			require.NoError(t, err)
			for range 3 {
				_, err := f.repo.ExpandBroadcastChunk(ctx, tc.limit)
				require.NoError(t, err, "a hold is no error")
			}
			refused, finished := broadcastState(t, f, id)
			assert.Zero(t, refused, "no token counted as refused during the freeze")
			assert.False(t, finished, "the broadcast is held, not ended")

			_, err = f.pool.Exec(ctx, `DROP TRIGGER host_freeze ON herald_deliveries`)
			require.NoError(t, err)
			expandUntil(t, f, tc.limit, func() bool { return len(deliveredTokens(t, f, id)) == len(tc.tokens) },
				"every device gets the broadcast once the freeze is lifted")
			assert.Equal(t, tc.tokens, deliveredTokens(t, f, id))
			refused, _ = broadcastState(t, f, id)
			assert.Zero(t, refused)
		})
	}
}

// The other side of holding a chunk every delivery of which is refused: a
// host's foreign key refusing only some tokens, which happen to make up a
// whole chunk (the broadcast's tail), must neither hold the broadcasts
// queued behind it nor its own broadcast forever. The held broadcast steps
// aside; once Herald's deliveries are seen accepted after the refusal, the
// refusal is the tokens' own and they are counted and skipped.
func TestATailOfBadTokensNeverHoldsUpTheBroadcastsBehindItNorItsOwnForever(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		bad  []string
	}{
		{"one bad token", []string{"eve-phone"}},
		{"a chunk of bad tokens only", []string{"dan-phone", "eve-phone"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newOwnershipFixture(t)
			all := []string{"ann-phone", "bob-phone", "cid-phone", "dan-phone", "eve-phone"}
			for _, tok := range all {
				f.register(tok, tok, notification.PlatformAndroid)
			}
			_, err := f.pool.Exec(ctx, `CREATE TABLE host_devices (token text PRIMARY KEY);
				ALTER TABLE herald_deliveries ADD CONSTRAINT host_device_fk FOREIGN KEY (token) REFERENCES host_devices (token);`)
			require.NoError(t, err)
			var good []string
			for _, tok := range all {
				if !slices.Contains(tc.bad, tok) {
					good = append(good, tok)
					_, err := f.pool.Exec(ctx, `INSERT INTO host_devices VALUES ($1)`, tok)
					require.NoError(t, err)
				}
			}
			first, second := addBroadcast(t, f), addBroadcast(t, f)
			limit := len(good)

			for range 10 {
				chunk, err := f.repo.ExpandBroadcastChunk(ctx, limit)
				require.NoError(t, err, "the expander works")
				if !chunk.Found {
					break
				}
			}
			assert.Equal(t, good, deliveredTokens(t, f, second), "the broadcast behind the held one is expanded meanwhile")

			expandUntil(t, f, limit, func() bool { _, finished := broadcastState(t, f, first); return finished },
				"the first broadcast ends: the second's deliveries were accepted after its refusal")
			refused, _ := broadcastState(t, f, first)
			assert.Equal(t, int64(len(tc.bad)), refused, "its bad tokens are counted")
			assert.Equal(t, good, deliveredTokens(t, f, first))

			_, finished := broadcastState(t, f, second)
			require.False(t, finished, "the last broadcast is held: nothing showed the host accepting Herald's deliveries since")
			f.deliver("ann", "", "ann-phone") // any other delivery Herald writes
			expandUntil(t, f, limit, func() bool { _, finished := broadcastState(t, f, second); return finished },
				"the last broadcast ends once Herald writes any other delivery")
			refused, _ = broadcastState(t, f, second)
			assert.Equal(t, int64(len(tc.bad)), refused)
			tl, err := f.repo.Timeline(ctx, second)
			require.NoError(t, err)
			require.NotNil(t, tl.Broadcast)
			assert.Contains(t, tl.Broadcast.Refusal, adapters.TokenHash(tc.bad[len(tc.bad)-1]))
		})
	}
}

// expandUntil expands chunks until done, for at most 10 s: a held
// broadcast is tried again after its hold, on the database's clock.
func expandUntil(t *testing.T, f *ownershipFixture, limit int, done func() bool, msg string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !done(); {
		require.True(t, time.Now().Before(deadline), msg)
		chunk, err := f.repo.ExpandBroadcastChunk(context.Background(), limit)
		require.NoError(t, err)
		if !chunk.Found {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func addBroadcast(t *testing.T, f *ownershipFixture) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	id := uuid.New()
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
		VALUES ($1, '', 'news', 'for all', '{}', now())`, id)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_broadcasts (notification_id, created_at) VALUES ($1, clock_timestamp())`, id)
	require.NoError(t, err)
	return id
}

func broadcastState(t *testing.T, f *ownershipFixture, id uuid.UUID) (refused int64, finished bool) {
	t.Helper()
	require.NoError(t, f.pool.QueryRow(context.Background(), `SELECT refused, finished_at IS NOT NULL
		FROM herald_broadcasts WHERE notification_id = $1`, id).Scan(&refused, &finished))
	return refused, finished
}

func deliveredTokens(t *testing.T, f *ownershipFixture, id uuid.UUID) []string {
	t.Helper()
	var tokens []string
	require.NoError(t, f.pool.QueryRow(context.Background(), `SELECT coalesce(array_agg(token ORDER BY token), '{}')
		FROM herald_deliveries WHERE notification_id = $1`, id).Scan(&tokens))
	return tokens
}

// Another instance's chunk of the default 5,000 tokens, in flight when a
// bad token's chunk is held, writes more than a thousand deliveries right
// above the hold's mark, all created by a transaction that began before the
// refusal. They prove nothing, but the deliveries Herald writes after them
// do: the bad token is then counted and skipped, and its broadcast ends.
// Before, the look stopped at the first thousand rows after the mark and
// the broadcast was held again, each time another chunk was in flight, and
// for good once nothing more was written.
func TestABadTokenHoldsItsBroadcastOnlyUntilHeraldWritesAnotherDeliveryWhateverWasInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("eve", "eve-phone", notification.PlatformAndroid)
	_, err := f.pool.Exec(ctx, `CREATE TABLE host_devices (token text PRIMARY KEY);
		INSERT INTO host_devices SELECT 'other-' || g FROM generate_series(0, 1500) g;
		ALTER TABLE herald_deliveries ADD CONSTRAINT host_device_fk FOREIGN KEY (token) REFERENCES host_devices (token);`)
	require.NoError(t, err)
	id := addBroadcast(t, f)
	other := uuid.New()
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
		VALUES ($1, '', 'news', 'for all', '{}', now())`, other)
	require.NoError(t, err)

	// The other chunk's transaction began before the refusal and writes
	// its deliveries after it.
	inFlight, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = inFlight.Rollback(ctx) }()
	_, err = inFlight.Exec(ctx, `SELECT now()`)
	require.NoError(t, err)
	chunk, err := f.repo.ExpandBroadcastChunk(ctx, 5000)
	require.NoError(t, err)
	require.True(t, chunk.Held, "the bad token's chunk is held at first")
	_, err = inFlight.Exec(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		SELECT $1, 'other-' || g, 'pending', now(), now(), now() FROM generate_series(1, 1500) g`, other)
	require.NoError(t, err)
	require.NoError(t, inFlight.Commit(ctx))
	// Herald writes a delivery after the refusal.
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		VALUES ($1, 'other-0', 'pending', now(), now(), now())`, other)
	require.NoError(t, err)

	expandUntil(t, f, 5000, func() bool { _, finished := broadcastState(t, f, id); return finished },
		"the broadcast ends: a delivery was accepted after the refusal")
	refused, _ := broadcastState(t, f, id)
	assert.Equal(t, int64(1), refused)
}

// A held chunk's tokens are skipped only on a delivery accepted after the
// refusal, by a transaction that began after it. The database's clock may
// step back (a correction, a failover to a server whose clock is behind):
// then a transaction that began before the refusal has a start later than
// the hold's time. Its delivery, written before the freeze and committed
// after the refusal, proved nothing, yet was taken as evidence, and the
// held token was counted refused and its push lost during the freeze.
// Here the hold's time is moved an hour back, as a clock stepped back an
// hour between that transaction's start and the hold would have written it.
func TestAFreezeLosesNoDeliveryWhenTheDatabasesClockStepsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("ann", "ann-phone", notification.PlatformAndroid)
	_, err := f.pool.Exec(ctx, `
		CREATE TABLE host_freeze (frozen boolean NOT NULL);
		INSERT INTO host_freeze VALUES (false);
		CREATE FUNCTION host_freeze() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF (SELECT frozen FROM host_freeze) THEN RAISE EXCEPTION 'deliveries are frozen'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER host_freeze BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION host_freeze();`)
	require.NoError(t, err)
	id := addBroadcast(t, f)
	other := uuid.New()
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
		VALUES ($1, 'bob', 'test', 'for bob', now())`, other)
	require.NoError(t, err)

	// A transaction writes a delivery before the freeze and commits after
	// the refusal.
	before, err := f.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = before.Rollback(ctx) }()
	_, err = before.Exec(ctx, `INSERT INTO herald_deliveries (notification_id, token, status, due_at, created_at, updated_at)
		VALUES ($1, 'bob-phone', 'pending', now(), now(), now())`, other)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `UPDATE host_freeze SET frozen = true`)
	require.NoError(t, err)
	chunk, err := f.repo.ExpandBroadcastChunk(ctx, 5000)
	require.NoError(t, err)
	require.True(t, chunk.Held)
	_, err = f.pool.Exec(ctx, `UPDATE herald_broadcasts SET held_at = held_at - interval '1 hour', held_until = now()
		WHERE notification_id = $1`, id)
	require.NoError(t, err)
	require.NoError(t, before.Commit(ctx))

	for range 3 {
		_, err := f.repo.ExpandBroadcastChunk(ctx, 5000)
		require.NoError(t, err)
	}
	refused, finished := broadcastState(t, f, id)
	assert.Zero(t, refused, "no token counted as refused during the freeze")
	assert.False(t, finished, "the broadcast is held, not ended")

	_, err = f.pool.Exec(ctx, `UPDATE host_freeze SET frozen = false`)
	require.NoError(t, err)
	expandUntil(t, f, 5000, func() bool { return len(deliveredTokens(t, f, id)) == 1 },
		"the device gets the broadcast once the freeze is lifted")
}
