package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// These tests run the relay's rules on an in-memory store whose savepoints
// undo what failed, as Postgres does.

var (
	errBadRow    = errors.New("index row too large (deterministic)")
	errConnReset = errors.New("connection reset (transient)")
)

// memRelayStore is an app.RelayStore in memory. fail decides, per Expand
// call, whether it fails; a savepoint that fails drops what it wrote.
type memRelayStore struct {
	mu          sync.Mutex
	fail        func(ids []uuid.UUID) error
	failDead    func(dl app.DeadLetter) error
	expanded    []uuid.UUID
	deadLetters []app.DeadLetter
	expandCalls int
}

func (s *memRelayStore) Expand(_ context.Context, ids []uuid.UUID) (int, error) {
	s.mu.Lock()
	s.expandCalls++
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		if err := fail(ids); err != nil {
			return 0, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expanded = append(s.expanded, ids...)
	return 2 * len(ids), nil // two devices per recipient
}

func (s *memRelayStore) AddDeadLetters(_ context.Context, dls []app.DeadLetter) error {
	if s.failDead != nil {
		for _, dl := range dls { // one statement: any letter fails them all
			if err := s.failDead(dl); err != nil {
				return err
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadLetters = append(s.deadLetters, dls...)
	return nil
}

func (s *memRelayStore) Savepoint(_ context.Context, fn func(app.RelayStore) error) error {
	s.mu.Lock()
	expanded, dead := len(s.expanded), len(s.deadLetters)
	s.mu.Unlock()
	err := fn(s)
	if err != nil {
		s.mu.Lock()
		s.expanded, s.deadLetters = s.expanded[:expanded], s.deadLetters[:dead]
		s.mu.Unlock()
	}
	return err
}

func (s *memRelayStore) IsTransient(err error) bool { return errors.Is(err, errConnReset) }

// relayRules knows the event types "ping" and "note".
func relayRules(t *testing.T) *notification.Rules {
	t.Helper()
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, func(pingEvent) ([]notification.Draft, error) { return nil, nil }))
	require.NoError(t, notification.On(rules, func(noteEvent) ([]notification.Draft, error) { return nil, nil }))
	return rules
}

type pingEvent struct{}

func (pingEvent) EventType() string { return "ping" }

type noteEvent struct{}

func (noteEvent) EventType() string { return "note" }

// relayMessage is a message of events of the given types, one notification
// each; event i alone encodes as "event-i".
func relayMessage(types ...string) app.RelayMessage {
	msg := app.RelayMessage{ID: uuid.NewString(), Payload: []byte(`{"whole":"message"}`), Metadata: map[string]string{"k": "v"}}
	for _, typ := range types {
		msg.Events = append(msg.Events, app.RelayEvent{Type: typ, Notifications: []uuid.UUID{uuid.New()}})
	}
	msg.EncodeEvent = func(i int) ([]byte, error) { return fmt.Appendf(nil, "event-%d", i), nil }
	return msg
}

func newRelayHandler(t *testing.T, clock *fakeClock) *app.RelayHandler {
	return app.NewRelayHandler(relayRules(t), app.RelayHandlerConfig{Now: clock.Now})
}

func TestAnEventOfAnUnknownTypeIsDeadLetteredAloneAndTheOthersAreExpanded(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	store := &memRelayStore{}
	msg := relayMessage("ping", "from-a-newer-version", "note")

	out, err := newRelayHandler(t, clock).Handle(context.Background(), store, msg)

	require.NoError(t, err, "the message is acked")
	assert.Equal(t, app.RelayOutcome{Events: 2, Deliveries: 4, DeadLetters: 1}, out)
	assert.Equal(t, []uuid.UUID{msg.Events[0].Notifications[0], msg.Events[2].Notifications[0]}, store.expanded)
	require.Len(t, store.deadLetters, 1)
	dl := store.deadLetters[0]
	assert.Equal(t, "event-1", string(dl.Payload), "the event alone, replayable once its rule is deployed")
	assert.Contains(t, dl.Reason, notification.ErrUnknownEvent.Error())
	assert.Contains(t, dl.Reason, "from-a-newer-version")
	assert.Equal(t, msg.ID, dl.MessageUUID)
	assert.Equal(t, "herald_outbox", dl.Topic)
	assert.Equal(t, clock.Now(), dl.CreatedAt)
}

func TestAMalformedMessageIsDeadLetteredWholeAndAcked(t *testing.T) {
	t.Parallel()
	store := &memRelayStore{}
	msg := app.RelayMessage{ID: "m", Payload: []byte("not json"), Metadata: map[string]string{"k": "v"},
		Malformed: fmt.Errorf("%w: outbox message: invalid character", notification.ErrMalformedEvent)}

	out, err := newRelayHandler(t, newFakeClock()).Handle(context.Background(), store, msg)

	require.NoError(t, err)
	assert.Equal(t, app.RelayOutcome{DeadLetters: 1}, out)
	assert.Zero(t, store.expandCalls)
	require.Len(t, store.deadLetters, 1)
	assert.Equal(t, "not json", string(store.deadLetters[0].Payload))
	assert.Equal(t, msg.Malformed.Error(), store.deadLetters[0].Reason)
	assert.Equal(t, msg.Metadata, store.deadLetters[0].Metadata)
}

func TestAnOversizedMessageIsDeadLetteredKeepingOnlyItsStart(t *testing.T) {
	t.Parallel()
	store := &memRelayStore{}
	msg := relayMessage("ping")
	msg.Payload = bytes.Repeat([]byte("x"), app.MaxOutboxMessageBytes+1)

	out, err := newRelayHandler(t, newFakeClock()).Handle(context.Background(), store, msg)

	require.NoError(t, err)
	assert.Equal(t, app.RelayOutcome{DeadLetters: 1}, out)
	assert.Zero(t, store.expandCalls, "an oversized message is not expanded")
	require.Len(t, store.deadLetters, 1)
	assert.Len(t, store.deadLetters[0].Payload, app.MaxDeadPayloadKept)
}

func TestADeterministicFailureIsRetriedThenOnlyTheFailingEventIsDeadLettered(t *testing.T) {
	t.Parallel()
	store := &memRelayStore{}
	msg := relayMessage("ping", "note", "ping", "note", "ping")
	poison := msg.Events[3].Notifications[0]
	store.fail = func(ids []uuid.UUID) error {
		if slices.Contains(ids, poison) {
			return fmt.Errorf("expand: %w", errBadRow)
		}
		return nil
	}
	h := app.NewRelayHandler(relayRules(t), app.RelayHandlerConfig{MaxTries: 3})
	ctx := context.Background()

	for try := 1; try < 3; try++ {
		_, err := h.Handle(ctx, store, msg)
		require.ErrorIs(t, err, errBadRow, "try %d is nacked", try)
		assert.Empty(t, store.deadLetters, "no dead letter before the last try")
		assert.Empty(t, store.expanded, "a failed try leaves nothing behind")
	}
	out, err := h.Handle(ctx, store, msg)

	require.NoError(t, err, "the third try acks the message")
	assert.Equal(t, app.RelayOutcome{Events: 4, Deliveries: 8, DeadLetters: 1}, out)
	require.Len(t, store.deadLetters, 1)
	assert.Equal(t, "event-3", string(store.deadLetters[0].Payload))
	assert.Contains(t, store.deadLetters[0].Reason, errBadRow.Error())
	assert.ElementsMatch(t, []uuid.UUID{
		msg.Events[0].Notifications[0], msg.Events[1].Notifications[0],
		msg.Events[2].Notifications[0], msg.Events[4].Notifications[0],
	}, store.expanded, "the good events are delivered")
}

func TestAMessageThatWentThroughStartsItsTriesAfresh(t *testing.T) {
	t.Parallel()
	store := &memRelayStore{}
	failing := true
	store.fail = func([]uuid.UUID) error {
		if failing {
			return errBadRow
		}
		return nil
	}
	h := app.NewRelayHandler(relayRules(t), app.RelayHandlerConfig{MaxTries: 3})
	msg := relayMessage("ping")
	ctx := context.Background()
	for range 2 {
		_, err := h.Handle(ctx, store, msg)
		require.Error(t, err)
	}
	failing = false
	_, err := h.Handle(ctx, store, msg)
	require.NoError(t, err)

	// Redelivered (at least once), it fails again: its count starts over.
	failing = true
	for range 2 {
		_, err := h.Handle(ctx, store, msg)
		require.Error(t, err)
	}
	assert.Empty(t, store.deadLetters)
}

func TestATransientFailureIsRetriedForeverAndNeverDeadLettered(t *testing.T) {
	t.Parallel()
	store := &memRelayStore{fail: func([]uuid.UUID) error { return fmt.Errorf("expand: %w", errConnReset) }}
	h := newRelayHandler(t, newFakeClock())
	msg := relayMessage("ping", "note")
	for try := range 50 {
		_, err := h.Handle(context.Background(), store, msg)
		require.ErrorIs(t, err, errConnReset, "try %d", try)
	}
	assert.Empty(t, store.deadLetters)
}

func TestAFailureOnceTheContextEndedIsNeverDeadLettered(t *testing.T) {
	t.Parallel()
	store := &memRelayStore{fail: func([]uuid.UUID) error { return errBadRow }}
	h := newRelayHandler(t, newFakeClock())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msg := relayMessage("ping")
	for range 10 {
		_, err := h.Handle(ctx, store, msg)
		require.Error(t, err)
	}
	assert.Empty(t, store.deadLetters, "a failure at shutdown says nothing about the message")
}

func TestAPanicWhileRelayingDeadLettersTheMessage(t *testing.T) {
	t.Parallel()
	store := &memRelayStore{fail: func([]uuid.UUID) error { panic("boom") }}
	msg := relayMessage("ping")

	out, err := newRelayHandler(t, newFakeClock()).Handle(context.Background(), store, msg)

	require.NoError(t, err, "the relay goes on with the next message")
	assert.Equal(t, app.RelayOutcome{DeadLetters: 1}, out)
	require.Len(t, store.deadLetters, 1)
	assert.Contains(t, store.deadLetters[0].Reason, "relay panicked: boom")
	assert.Equal(t, string(msg.Payload), string(store.deadLetters[0].Payload))
}

func TestADeadLetterWhoseMetadataCannotBeStoredIsStoredWithoutIt(t *testing.T) {
	t.Parallel()
	store := &memRelayStore{failDead: func(dl app.DeadLetter) error {
		if dl.Metadata != nil {
			return errBadRow
		}
		return nil
	}}
	msg := app.RelayMessage{ID: "m", Payload: []byte("?"), Metadata: map[string]string{"bad": "\x00"}, Malformed: errors.New("unreadable")}

	_, err := newRelayHandler(t, newFakeClock()).Handle(context.Background(), store, msg)

	require.NoError(t, err)
	require.Len(t, store.deadLetters, 1)
	assert.Nil(t, store.deadLetters[0].Metadata)
	assert.Equal(t, "unreadable", store.deadLetters[0].Reason)
}

// TestDeadLettersAreLoggedOncePerIntervalWithTheirCount: a host that
// deploys an event type before its rule dead-letters every such event; the
// relay logs the first at once and the rest of each interval in one line
// with their count, not one line per dead letter.
func TestDeadLettersAreLoggedOncePerIntervalWithTheirCount(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	var buf bytes.Buffer
	h := app.NewRelayHandler(relayRules(t), app.RelayHandlerConfig{Now: clock.Now,
		Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	store := &memRelayStore{}
	for range 500 {
		_, err := h.Handle(context.Background(), store, relayMessage("from-a-newer-version"))
		require.NoError(t, err)
		clock.Advance(time.Millisecond)
	}
	require.Len(t, store.deadLetters, 500)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 1, "the first dead letter at once, the others counted:\n%s", buf.String())
	assert.Contains(t, lines[0], `"count":1`)

	clock.Advance(app.DeadLetterLogInterval)
	_, err := h.Handle(context.Background(), store, relayMessage("ping"))
	require.NoError(t, err)
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2, "the interval's dead letters in one line when the next message comes:\n%s", buf.String())
	assert.Contains(t, lines[1], `"count":499`)
	assert.Contains(t, lines[1], `"level":"WARN"`)
	assert.Contains(t, lines[1], "from-a-newer-version")
}

func TestADatabaseOutageLogsOneRetryLinePerIntervalNotOnePerMessage(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	var buf bytes.Buffer
	h := app.NewRelayHandler(relayRules(t), app.RelayHandlerConfig{Now: clock.Now,
		Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	down := &memRelayStore{fail: func([]uuid.UUID) error { return fmt.Errorf("expand: %w", errConnReset) }}
	for range 1000 {
		_, err := h.Handle(context.Background(), down, relayMessage("ping"))
		require.ErrorIs(t, err, errConnReset)
		clock.Advance(time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 1, "the first failure at once, the others counted:\n%s", buf.String())
	assert.Contains(t, lines[0], "will be retried")

	clock.Advance(app.DeadLetterLogInterval)
	_, err := h.Handle(context.Background(), &memRelayStore{}, relayMessage("ping"))
	require.NoError(t, err)
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2, "the interval's failures in one line when the next message comes:\n%s", buf.String())
	assert.Contains(t, lines[1], `"count":999`)
	assert.Contains(t, lines[1], `"level":"WARN"`)
	assert.Contains(t, lines[1], "connection reset")
}
