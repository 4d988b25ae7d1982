package adapters_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
)

// A host's own trigger, CHECK or foreign key on herald_deliveries may
// refuse one token's delivery. The chunk it falls in used to fail whole, at
// every try: that broadcast and every broadcast queued behind it never
// finished. Now every other token gets its delivery, and the refusal is
// counted on the broadcast.
func TestAHostConstraintOnOneTokenNeverHoldsUpTheRestOfTheBroadcast(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, sql string }{
		{"a trigger raising a check violation", refusingTrigger("check_violation")},
		{"a trigger raising a plain exception", refusingTrigger("raise_exception")},
		{"a foreign key to a host table without the token", `
			CREATE TABLE host_devices (token text PRIMARY KEY);
			INSERT INTO host_devices VALUES ('ann-phone'), ('cid-phone'), ('dan-phone');
			ALTER TABLE herald_deliveries ADD CONSTRAINT host_device_fk FOREIGN KEY (token) REFERENCES host_devices (token);`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := newOwnershipFixture(t)
			for _, u := range []string{"ann", "bob", "cid", "dan"} {
				f.register(u, u+"-phone", notification.PlatformAndroid)
			}
			_, err := f.pool.Exec(ctx, tc.sql)
			require.NoError(t, err)
			var ids []uuid.UUID
			for range 2 {
				id := uuid.New()
				_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
					VALUES ($1, '', 'news', 'for all', '{}', now())`, id)
				require.NoError(t, err)
				_, err = f.pool.Exec(ctx, `INSERT INTO herald_broadcasts (notification_id, created_at) VALUES ($1, clock_timestamp())`, id)
				require.NoError(t, err)
				ids = append(ids, id)
			}

			for range 10 {
				chunk, err := f.repo.ExpandBroadcastChunk(ctx, 3)
				found := chunk.Found
				require.NoError(t, err, "the expander works")
				if !found {
					break
				}
			}
			for _, id := range ids {
				var tokens []string
				require.NoError(t, f.pool.QueryRow(ctx, `SELECT coalesce(array_agg(token ORDER BY token), '{}')
					FROM herald_deliveries WHERE notification_id = $1`, id).Scan(&tokens))
				assert.Equal(t, []string{"ann-phone", "cid-phone", "dan-phone"}, tokens, "everyone else gets the broadcast")
				tl, err := f.repo.Timeline(ctx, id)
				require.NoError(t, err)
				require.NotNil(t, tl.Broadcast)
				assert.Equal(t, int64(1), tl.Broadcast.Refused, "the operator sees the refused delivery counted")
				assert.Contains(t, tl.Broadcast.Refusal, adapters.TokenHash("bob-phone"), "the refusal names the token by its hash")
				assert.NotContains(t, tl.Broadcast.Refusal, "bob-phone", "never the token itself")
				assert.False(t, tl.Broadcast.FinishedAt.IsZero(), "the broadcast ends")
			}
		})
	}
}

// A host trigger refusing every delivery (a freeze, or a foreign key the
// host's code has not filled yet) is the host's database refusing Herald,
// not one token: the broadcast is held, nothing skipped or counted, and it
// goes on whole once the host lets Herald write again. Skipping the refused
// tokens, as for one token's refusal, would have lost every delivery of it.
// The hold is no error and holds only its own broadcast.
func TestAHostTriggerRefusingEveryDeliveryHoldsTheBroadcastAndLosesNone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	const tokens = 2500
	_, err := f.pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT 'tok-' || lpad(g::text, 5, '0'), 'user-' || g, 'android', now(), now() FROM generate_series(1, $1) g`, tokens)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `
		CREATE FUNCTION refuse_all() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'no deliveries today'; END $$;
		CREATE TRIGGER refuse_all BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION refuse_all();`)
	require.NoError(t, err)
	id := uuid.New()
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, audience, created_at)
		VALUES ($1, '', 'news', 'for all', '{}', now())`, id)
	require.NoError(t, err)
	_, err = f.pool.Exec(ctx, `INSERT INTO herald_broadcasts (notification_id, created_at) VALUES ($1, now())`, id)
	require.NoError(t, err)

	chunk, err := f.repo.ExpandBroadcastChunk(ctx, 5000)
	require.NoError(t, err, "a held broadcast is no error: the expander goes on with the others")
	assert.True(t, chunk.Held, "the broadcast is held")
	assert.Contains(t, chunk.Refusal, "no deliveries today", "the host's refusal is the hold's reason")
	assert.Positive(t, chunk.HeldFor)
	for range 2 {
		chunk, err := f.repo.ExpandBroadcastChunk(ctx, 5000)
		require.NoError(t, err)
		assert.False(t, chunk.Found, "a held broadcast steps aside until its hold ends")
	}
	var refused, expanded int64
	var finished bool
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT refused, expanded, finished_at IS NOT NULL FROM herald_broadcasts`).
		Scan(&refused, &expanded, &finished))
	assert.Zero(t, refused, "no token counted as refused")
	assert.Zero(t, expanded, "the cursor has not moved")
	assert.False(t, finished, "the broadcast is held, not ended")

	_, err = f.pool.Exec(ctx, `DROP TRIGGER refuse_all ON herald_deliveries`)
	require.NoError(t, err)
	var created int
	expandUntil(t, f, 5000, func() bool {
		require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM herald_deliveries WHERE notification_id = $1`, id).Scan(&created))
		return created == tokens
	}, "every device gets the broadcast once the host lets Herald write")
}

// refusingTrigger is a host's trigger on herald_deliveries that refuses
// every delivery to bob-phone with the SQLSTATE condition code.
func refusingTrigger(code string) string {
	return `
		CREATE FUNCTION refuse_bob() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.token = 'bob-phone' THEN
				RAISE EXCEPTION 'deliveries to bob-phone are refused' USING ERRCODE = '` + code + `';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_bob BEFORE INSERT ON herald_deliveries FOR EACH ROW EXECUTE FUNCTION refuse_bob();`
}
