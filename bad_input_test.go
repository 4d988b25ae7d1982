package herald_test

import (
	"context"
	"encoding/json"
	"errors"
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
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/outbox"
	"github.com/herald-push/herald/testutil"
)

// badInput is one class of hostile input: what a careless or malicious
// host (or a hand-written row) feeds Herald. feed gives it to Herald and
// asserts Herald's answer; then, whatever the class, a normal notification
// raised right after must still be delivered (nothing else delayed for
// good or lost); after, if set, checks what the input left once that
// notification is delivered. RELIABILITY.md's "Bad input" table lists the
// same cases.
type badInput struct {
	name  string // the promise
	feed  func(t *testing.T, h *harness)
	after func(t *testing.T, h *harness)
}

// TestBadInputIsAnsweredAndNothingElseSuffers feeds each hostile input
// class to its own Herald, checks the typed error, dead letter or skip it
// gets, and that a notification raised right after it is delivered.
func TestBadInputIsAnsweredAndNothingElseSuffers(t *testing.T) {
	t.Parallel()
	for _, c := range badInputs() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, fastConfig())
			h.registerTokens("author", 1)
			h.run()

			c.feed(t, h)

			ns := h.raise(true, comment("after-bad-input", "ann", "author"))
			require.Len(t, ns, 1)
			testutil.WaitDelivered(t, h.pool, ns[0].ID(), 30*time.Second)
			if c.after != nil {
				c.after(t, h)
			}
		})
	}
}

func badInputs() []badInput {
	threeKB := strings.Repeat("poison-token-", 300)[:3<<10] // compresses: the btree index takes it
	return []badInput{
		// Device tokens offered to Register.
		{name: "an empty token is refused with ErrInvalidToken",
			feed: registerRefused("", notification.ErrInvalidToken)},
		{name: "a token one byte over MaxTokenLength is refused with ErrInvalidToken",
			feed: registerRefused(strings.Repeat("t", notification.MaxTokenLength+1), notification.ErrInvalidToken)},
		{name: "a 3 KB token is refused with ErrInvalidToken",
			feed: registerRefused(randomToken(3<<10), notification.ErrInvalidToken)},
		{name: "a token with a NUL byte is refused with ErrInvalidToken",
			feed: registerRefused("tok\x00en", notification.ErrInvalidToken)},
		{name: "a token that is not UTF-8 is refused with ErrInvalidToken",
			feed: registerRefused("tok\xffen", notification.ErrInvalidToken)},
		{name: "a token with a space is refused with ErrInvalidToken",
			feed: registerRefused("tok en", notification.ErrInvalidToken)},
		{name: "a user id over MaxRecipientLength is refused with ErrTooLong",
			feed: func(t *testing.T, h *harness) {
				err := h.herald.Tokens().Register(context.Background(), strings.Repeat("u", notification.MaxRecipientLength+1),
					"device-of-a-long-user", notification.PlatformAndroid)
				require.ErrorIs(t, err, notification.ErrTooLong)
				assertNoNewToken(t, h)
			}},
		{name: "a token registered by another user moves to them and never gets its previous owner's push",
			feed: func(t *testing.T, h *harness) {
				ctx := context.Background()
				require.NoError(t, h.herald.Tokens().Register(ctx, "previous-owner", "shared-device", notification.PlatformAndroid))
				require.NoError(t, h.herald.Tokens().Register(ctx, "author", "shared-device", notification.PlatformAndroid))
				h.raise(true, comment("for-the-previous-owner", "ann", "previous-owner"))
			},
			after: func(t *testing.T, h *harness) {
				testutil.WaitIdle(t, h.pool, 30*time.Second)
				for _, r := range h.fake.AcceptedFor("shared-device") {
					assert.Equal(t, "after-bad-input", r.Data["comment_id"], "only its new owner's push reaches the device")
				}
				assert.Len(t, h.fake.AcceptedFor("shared-device"), 1)
			}},
		{name: "a 3 KB token written straight into the token table is skipped by expansion",
			feed: func(t *testing.T, h *harness) {
				_, err := h.pool.Exec(context.Background(), `INSERT INTO herald_device_tokens
					(token, user_id, platform, registered_at, last_seen_at) VALUES ($1, 'author', 'android', now(), now())`, threeKB)
				require.NoError(t, err, "the table takes it (a careless host migration)")
			},
			after: func(t *testing.T, h *harness) {
				var deliveries int
				require.NoError(t, h.pool.QueryRow(context.Background(),
					`SELECT count(*) FROM herald_deliveries WHERE token = $1`, threeKB).Scan(&deliveries))
				assert.Zero(t, deliveries, "no delivery for the overlong token")
				assert.Empty(t, h.fake.AcceptedFor(threeKB), "no push to the overlong token")
			}},
		{name: "a recipient with 20,000 tokens gets every push and delays nobody for good",
			feed: func(t *testing.T, h *harness) {
				_, err := h.pool.Exec(context.Background(), `INSERT INTO herald_device_tokens
					(token, user_id, platform, registered_at, last_seen_at)
					SELECT 'crowd-' || g, 'crowd', 'android', now(), now() FROM generate_series(1, 20000) g`)
				require.NoError(t, err)
				h.raise(true, comment("for-the-crowd", "ann", "crowd"))
			},
			after: func(t *testing.T, h *harness) {
				testutil.WaitIdle(t, h.pool, 2*time.Minute)
				var sent int
				require.NoError(t, h.pool.QueryRow(context.Background(), `SELECT count(*) FROM herald_deliveries d
					JOIN herald_notifications n ON n.id = d.notification_id WHERE n.recipient = 'crowd' AND d.status = 'sent'`).Scan(&sent))
				assert.Equal(t, 20000, sent)
			}},

		// Events and the notifications their rules make, refused by Raise
		// before anything is written; the host's transaction stays usable.
		{name: "a payload over 4096 bytes is refused with ErrPayloadTooLarge",
			feed: raiseRefused(hostile{Recipient: "author", Title: strings.Repeat("x", notification.MaxPayloadBytes+1)}, notification.ErrPayloadTooLarge)},
		{name: "a body that is not UTF-8 is refused with ErrInvalidUTF8",
			feed: raiseRefused(hostile{Recipient: "author", Title: "t", Body: "b\xffody"}, notification.ErrInvalidUTF8)},
		{name: "a data value with a NUL byte is refused with ErrInvalidUTF8",
			feed: raiseRefused(hostile{Recipient: "author", Title: "t", Data: map[string]string{"k": "v\x00"}}, notification.ErrInvalidUTF8)},
		{name: "a reserved data key is refused with ErrReservedDataKey",
			feed: raiseRefused(hostile{Recipient: "author", Title: "t", Data: map[string]string{"google.sent_time": "1"}}, notification.ErrReservedDataKey)},
		{name: "a TTL over 28 days is refused with ErrTTLOutOfRange",
			feed: raiseRefused(hostile{Recipient: "author", Title: "t", TTL: notification.MaxTTL + time.Second}, notification.ErrTTLOutOfRange)},
		{name: "a negative TTL is refused with ErrTTLOutOfRange",
			feed: raiseRefused(hostile{Recipient: "author", Title: "t", TTL: -time.Second}, notification.ErrTTLOutOfRange)},
		{name: "a recipient over MaxRecipientLength is refused with ErrTooLong",
			feed: raiseRefused(hostile{Recipient: strings.Repeat("r", notification.MaxRecipientLength+1), Title: "t"}, notification.ErrTooLong)},
		{name: "an event type with no rule is refused with ErrUnknownEvent",
			feed: raiseRefused(unruled{}, notification.ErrUnknownEvent)},
		{name: "an event whose Validate fails is refused with its error",
			feed: raiseRefused(notification.CommentCreated{CommentID: "c", CommenterID: "ann", CourseAuthorID: "author"}, notification.ErrRequired)},
		{name: "an event with a NaN field is refused and nothing of it is written",
			feed: func(t *testing.T, h *harness) {
				err := raiseThenCommitNormal(t, h, hostile{Recipient: "author", Title: "t", Score: math.NaN()})
				var unsupported *json.UnsupportedValueError
				require.ErrorAs(t, err, &unsupported)
			}},

		// Rows written straight into the outbox table, not by Raise: each is
		// moved to the dead letters and the relay goes on.
		outboxRowDeadLettered("a NULL outbox row is dead-lettered", nil, nil),
		outboxRowDeadLettered("an outbox row that is a JSON array is dead-lettered", ptr(`[1, 2, 3]`), nil),
		outboxRowDeadLettered("an outbox row that is JSON null is dead-lettered", ptr(`null`), nil),
		outboxRowDeadLettered("a 2 MB outbox row is dead-lettered",
			ptr(`{"v":1,"events":[{"type":"comment_created","data":{"junk":"`+
				strings.Repeat("x", 2<<20)+`"},"notifications":[]}]}`), nil),
		outboxRowDeadLettered("an outbox row of another version is dead-lettered",
			ptr(`{"v":2,"events":[{"type":"comment_created","data":`+validCommentJSON+`,"notifications":[]}]}`), nil),
		outboxRowDeadLettered("an outbox row of an event type with no rule is dead-lettered",
			ptr(`{"v":1,"events":[{"type":"no_such_event","data":{},"notifications":[]}]}`), nil),
		outboxRowDeadLettered("outbox metadata with a value that is not a string is dead-lettered",
			ptr(`{"v":1,"events":[{"type":"comment_created","data":`+validCommentJSON+`,"notifications":[]}]}`), ptr(`{"traceparent": 1}`)),
		outboxRowDeadLettered("outbox metadata that is not an object is dead-lettered",
			ptr(`{"v":1,"events":[{"type":"comment_created","data":`+validCommentJSON+`,"notifications":[]}]}`), ptr(`[1, 2]`)),
	}
}

// validCommentJSON is a CommentCreated that decodes and validates.
const validCommentJSON = `{"course_id":"c","course_title":"T","comment_id":"x","commenter_id":"ann","commenter_name":"Ann","course_author_id":"author"}`

func ptr(s string) *string { return &s }

// registerRefused offers token to Register and expects sentinel, with
// nothing stored.
func registerRefused(token string, sentinel error) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		err := h.herald.Tokens().Register(context.Background(), "author", token, notification.PlatformAndroid)
		require.ErrorIs(t, err, sentinel)
		assertNoNewToken(t, h)
	}
}

// assertNoNewToken checks that only the harness's own token is stored (a
// refused token may not even be valid text to look it up with).
func assertNoNewToken(t *testing.T, h *harness) {
	t.Helper()
	var n int
	require.NoError(t, h.pool.QueryRow(context.Background(), `SELECT count(*) FROM herald_device_tokens`).Scan(&n))
	assert.Equal(t, 1, n, "the refused token is not stored")
}

// raiseRefused raises ev in a host transaction and expects sentinel; see
// raiseThenCommitNormal.
func raiseRefused(ev notification.Event, sentinel error) func(*testing.T, *harness) {
	return func(t *testing.T, h *harness) {
		err := raiseThenCommitNormal(t, h, ev)
		require.ErrorIs(t, err, sentinel)
	}
}

// raiseThenCommitNormal raises ev in a host transaction (with the host's
// full rule set, hostile and CommentCreated), then raises a normal comment
// in the same transaction and commits it: the transaction must still be
// usable, and the refused event must have written nothing. It returns the
// refused Raise's error.
func raiseThenCommitNormal(t *testing.T, h *harness, ev notification.Event) error {
	t.Helper()
	ctx := context.Background()
	var raiseErr error
	err := pgx.BeginFunc(ctx, h.pool, func(tx pgx.Tx) error {
		ns, err := hostileOutbox(t).Raise(ctx, tx, ev)
		raiseErr = err
		require.Error(t, err, "Raise refuses the event")
		require.Empty(t, ns)
		_, err = h.herald.Raise(ctx, tx, comment("same-tx", "ann", "author"))
		return err
	})
	require.NoError(t, err, "the host's transaction stays usable and commits")
	var notifications, events int
	require.NoError(t, h.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM herald_notifications),
		(SELECT count(*) FROM watermill_herald_outbox)`).Scan(&notifications, &events))
	assert.Equal(t, 1, notifications, "only the normal comment's notification was written: Raise is all or nothing")
	assert.Equal(t, 1, events, "only the normal comment's event was written: Raise is all or nothing")
	return raiseErr
}

// outboxRowDeadLettered is the case of a row written straight into the
// outbox table (a nil payload or metadata is SQL NULL): once the next
// notification is delivered, the row is among the dead letters.
func outboxRowDeadLettered(name string, payload, metadata *string) badInput {
	id := uuid.NewString()
	return badInput{
		name: name,
		feed: func(t *testing.T, h *harness) {
			_, err := h.pool.Exec(context.Background(), `INSERT INTO watermill_herald_outbox (uuid, payload, metadata, transaction_id)
				VALUES ($1, $2::json, $3::json, pg_current_xact_id())`, id, payload, metadata)
			require.NoError(t, err)
		},
		after: func(t *testing.T, h *harness) {
			var n int
			require.NoError(t, h.pool.QueryRow(context.Background(),
				`SELECT count(*) FROM herald_dead_letters WHERE message_uuid = $1`, id).Scan(&n))
			assert.Positive(t, n, "the row is among the dead letters")
		},
	}
}

// hostile is a host event whose rule passes its fields straight into the
// notification: the way a host's rule forwards user input.
type hostile struct {
	Recipient string            `json:"recipient"`
	Title     string            `json:"title"`
	Body      string            `json:"body"`
	Data      map[string]string `json:"data"`
	TTL       time.Duration     `json:"ttl"`
	Score     float64           `json:"score"`
}

func (hostile) EventType() string { return "hostile" }

// unruled is an event type no rule is registered for.
type unruled struct{}

func (unruled) EventType() string { return "unruled" }

// hostileOutbox raises with the host's rules: CommentCreated and hostile.
func hostileOutbox(t *testing.T) *outbox.Outbox {
	t.Helper()
	rules := notification.NewRules()
	require.NoError(t, errors.Join(
		notification.On(rules, notification.NotifyCourseAuthor),
		notification.On(rules, func(e hostile) ([]notification.Draft, error) {
			return []notification.Draft{{Recipient: e.Recipient, Type: "hostile",
				Content: notification.Content{Title: e.Title, Body: e.Body, Data: e.Data, TTL: e.TTL}}}, nil
		}),
	))
	return outbox.New(rules, adapters.NotificationWriterIn, outbox.Config{})
}

// randomToken returns n characters that do not compress, unlike a
// repeated pattern: a btree index refuses such a value over 2,704 bytes.
func randomToken(n int) string {
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(strings.ReplaceAll(uuid.NewString(), "-", ""))
	}
	return fmt.Sprintf("%.*s", n, b.String())
}
