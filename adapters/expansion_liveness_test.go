package adapters_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/adapters"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// randomToken returns n bytes of token text that does not compress, as real
// tokens do not: Postgres compresses long index entries, so a repeated
// character would hide the index size limit.
func randomToken(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func insertToken(t *testing.T, pool *pgxpool.Pool, user, token string) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		VALUES ($1, $2, 'android', now(), now())`, token, user)
	require.NoError(t, err)
}

func addNotification(t *testing.T, pool *pgxpool.Pool, recipient string) uuid.UUID {
	t.Helper()
	n, err := notification.NewNotification(uuid.Must(uuid.NewV7()),
		notification.Draft{Recipient: recipient, Type: "t", Content: notification.Content{Title: "hi"}}, time.Now())
	require.NoError(t, err)
	_, err = adapters.NewPostgresNotificationRepository(pool).Add(context.Background(), []*notification.Notification{n})
	require.NoError(t, err)
	return n.ID()
}

func countDeliveries(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM herald_deliveries WHERE notification_id = $1`, id).Scan(&n))
	return n
}

func TestTokenTooLongForTheIndexesIsSkippedByExpansion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	// Fits the token table's own key, but not (notification_id, token).
	insertToken(t, pool, "u1", randomToken(t, 2680))
	insertToken(t, pool, "u1", "good-token")
	insertToken(t, pool, "everyone", randomToken(t, 2680))
	id := addNotification(t, pool, "u1")

	created, err := adapters.NewPostgresDeliveryRepository(pool).Expand(ctx, []uuid.UUID{id})
	require.NoError(t, err)
	assert.Equal(t, 1, created)

	// A broadcast skips it too.
	_, err = pool.Exec(ctx, `INSERT INTO herald_broadcasts (notification_id, created_at) VALUES ($1, now())`, id)
	require.NoError(t, err)
	chunk, err := adapters.NewPostgresDeliveryRepository(pool).ExpandBroadcastChunk(ctx, 100)
	created, found := chunk.Created, chunk.Found
	require.NoError(t, err)
	assert.True(t, found)
	assert.Equal(t, 0, created, "good-token already has its delivery; the long ones are skipped")
}

func TestRecipientWithManyTokensIsExpandedInBoundedChunks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	const tokens = 12_345
	_, err := pool.Exec(ctx, `INSERT INTO herald_device_tokens (token, user_id, platform, registered_at, last_seen_at)
		SELECT 'crowd-' || lpad(g::text, 6, '0'), 'crowd', 'ios', now(), now() FROM generate_series(1, $1) g`, tokens)
	require.NoError(t, err)
	id := addNotification(t, pool, "crowd")
	repo := adapters.NewPostgresDeliveryRepository(pool)

	created, err := repo.Expand(ctx, []uuid.UUID{id})
	require.NoError(t, err)
	assert.Equal(t, adapters.ExpandChunkSize, created, "one statement creates at most a chunk")
	// Redelivery of the same event changes nothing.
	created, err = repo.Expand(ctx, []uuid.UUID{id})
	require.NoError(t, err)
	assert.Zero(t, created)
	var continuations int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM herald_broadcasts WHERE recipient = 'crowd'`).Scan(&continuations))
	assert.Equal(t, 1, continuations)

	// Another user's tokens are not part of the continuation.
	insertToken(t, pool, "someone-else", "zzz-other-token")
	for range 10 {
		chunk, err := repo.ExpandBroadcastChunk(ctx, 1000)
		created, found := chunk.Created, chunk.Found
		require.NoError(t, err)
		if !found {
			break
		}
		assert.LessOrEqual(t, created, 1000)
	}
	assert.Equal(t, tokens, countDeliveries(t, pool, id))
	var due, now time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT max(due_at), now() FROM herald_deliveries`).Scan(&due, &now))
	assert.False(t, due.After(now), "due at the database's clock")
}

func TestExpansionMakesPostgresLogNoWarning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testutil.NewPool(t)
	insertToken(t, pool, "u1", "tok-1")
	id := addNotification(t, pool, "u1")

	// Outside a transaction block, as a caller on a pool runs it. Whatever
	// Postgres would write to its log as a warning, it also sends to the
	// client as a notice.
	cfg := pool.Config().ConnConfig.Copy()
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Severity+": "+n.Message) }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close(ctx)
	repo := adapters.NewPostgresDeliveryRepository(conn)
	created, err := repo.Expand(ctx, []uuid.UUID{id})
	require.NoError(t, err)
	assert.Equal(t, 1, created)
	_, err = repo.ExpandBroadcastChunk(ctx, 10)
	require.NoError(t, err)
	assert.Empty(t, notices)
}
