package adapters_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/notification"
)

// Dead letters are other users' notifications waiting to be replayed:
// forgetting a user takes out what names them (their notification ids, an
// event's data that names them, an event that was only theirs), and keeps
// the rest for replay. A user id that merely occurs in someone else's
// letter (user "42", comment "42") deletes nothing of theirs.
func TestForgettingAUserKeepsOtherUsersDeadLettersWithoutTheirPart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newOwnershipFixture(t)
	f.register("42", "phone-of-42", notification.PlatformAndroid)
	f.register("bob", "bob-phone", notification.PlatformAndroid)
	mine, bobs := uuid.New(), uuid.New()
	for _, n := range []struct {
		id        uuid.UUID
		recipient string
	}{{mine, "42"}, {bobs, "bob"}} {
		_, err := f.pool.Exec(ctx, `INSERT INTO herald_notifications (id, recipient, type, title, created_at)
			VALUES ($1, $2, 'comment', 'x', now())`, n.id, n.recipient)
		require.NoError(t, err)
	}
	letter := func(events string) []byte { return []byte(`{"v":1,"events":[` + events + `]}`) }
	letters := map[string][]byte{
		// Bob's notification; "42" is only a comment id.
		"bobs, mentioning 42": letter(`{"type":"comment_created","data":{"comment_id":"42"},"notifications":["` + bobs.String() + `"]}`),
		// One event for both: bob's part stays, with data naming 42 emptied.
		"shared": letter(`{"type":"comment_created","data":{"commenter":"42"},"notifications":["` +
			mine.String() + `","` + bobs.String() + `"]}`),
		// Only 42's: goes.
		"only 42's": letter(`{"type":"comment_created","data":{"x":"y"},"notifications":["` + mine.String() + `"]}`),
		// Not JSON, naming 42: goes.
		"truncated": []byte(`{"v":1,"events":[{"type":"a","data":{"user":"42"`),
	}
	ids := map[string]int64{}
	for name, payload := range letters {
		var id int64
		require.NoError(t, f.pool.QueryRow(ctx, `INSERT INTO herald_dead_letters (topic, message_uuid, payload, reason)
			VALUES ('herald_outbox', $1, $2, 'test') RETURNING id`, name, payload).Scan(&id))
		ids[name] = id
	}

	report, err := f.repo.ForgetUser(ctx, "42")
	require.NoError(t, err)
	assert.Equal(t, 4, report.DeadLetters, "two rewritten, two deleted")

	read := func(name string) (map[string]any, bool) {
		var payload []byte
		err := f.pool.QueryRow(ctx, `SELECT payload FROM herald_dead_letters WHERE id = $1`, ids[name]).Scan(&payload)
		if err != nil {
			return nil, false
		}
		var v map[string]any
		require.NoError(t, json.Unmarshal(payload, &v), name)
		return v, true
	}
	bobsLetter, ok := read("bobs, mentioning 42")
	require.True(t, ok, "bob's letter is kept")
	assert.Equal(t, []any{bobs.String()}, bobsLetter["events"].([]any)[0].(map[string]any)["notifications"],
		"bob's notification is still replayable (its data may go: the relay reads only the ids)")
	shared, ok := read("shared")
	require.True(t, ok, "the shared letter is kept for bob")
	ev := shared["events"].([]any)[0].(map[string]any)
	assert.Equal(t, []any{bobs.String()}, ev["notifications"])
	assert.Equal(t, map[string]any{}, ev["data"])
	assert.Equal(t, float64(1), shared["v"])
	_, ok = read("only 42's")
	assert.False(t, ok)
	_, ok = read("truncated")
	assert.False(t, ok)
}
