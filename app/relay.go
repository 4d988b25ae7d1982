package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/notification"
)

// MaxOutboxMessageBytes bounds an outbox message the relay reads. Raise
// writes at most a thousand notification ids and a few MiB of event JSON
// per message; a larger payload was not written by Raise, and the relay
// dead-letters it unread, keeping only its first 64 KiB.
const MaxOutboxMessageBytes = 16 << 20

// maxDeadPayloadKept is how much of an oversized payload a dead letter
// keeps.
const maxDeadPayloadKept = 64 << 10

// RelayStore is what relaying one outbox message needs, bound to the
// transaction that acknowledges the message: whatever it writes commits
// with the ack, so each message's effects happen exactly once.
type RelayStore interface {
	// Expand creates the deliveries of the notifications (one per current
	// device token of each recipient) and returns how many it created. It
	// is idempotent.
	Expand(ctx context.Context, notificationIDs []uuid.UUID) (int, error)
	// AddDeadLetters stores dls, in one statement: a message may set a
	// thousand events aside, and a statement each would outlast the ack
	// deadline on a database a network hop away.
	AddDeadLetters(ctx context.Context, dls []DeadLetter) error
	// Savepoint runs fn on a store inside a savepoint of this one: when fn
	// fails, what it wrote is undone and this store stays usable.
	Savepoint(ctx context.Context, fn func(RelayStore) error) error
	// IsTransient reports whether err, returned by this store, may go away
	// by itself (a broken connection, a serialization failure), as opposed
	// to failing the same way on every try.
	IsTransient(err error) bool
}

// RelayMessage is one outbox message, decoded by the outbox.
type RelayMessage struct {
	// ID identifies the message across redeliveries.
	ID string
	// Payload and Metadata are kept in the message's dead letter.
	Payload  []byte
	Metadata map[string]string
	// Malformed, when not nil, says why the message is not a Herald
	// message (its metadata or payload does not decode); Events is then
	// empty.
	Malformed error
	// Events are the message's events, in order.
	Events []RelayEvent
	// EncodeEvent returns event i as a message of its own, the form in
	// which one dead-lettered event can be replayed. When it is nil or
	// fails, the dead letter keeps the whole payload.
	EncodeEvent func(i int) ([]byte, error)
}

// RelayEvent is one event of an outbox message: its type, and the
// notifications its rule created when it was raised.
type RelayEvent struct {
	Type          string
	Notifications []uuid.UUID
}

// RelayOutcome counts what handling one message did.
type RelayOutcome struct {
	Events, Deliveries, DeadLetters int
}

// RelayHandlerConfig configures a RelayHandler. Zero values mean the
// documented defaults.
type RelayHandlerConfig struct {
	// Topic is written in dead letters. Defaults to "herald_outbox".
	Topic string
	// MaxTries is how many times a message that fails for a deterministic
	// reason is tried before its failing events are isolated and
	// dead-lettered. Defaults to 3.
	MaxTries int
	// Now is the clock for dead letters. Defaults to time.Now.
	Now func() time.Time
	// Logger receives the relay's warnings: failed messages (retried) and
	// dead letters, each kind in one line per DeadLetterLogInterval with
	// its count (a database outage fails every message at each
	// redelivery; a host that deploys an event type before its rule
	// dead-letters every such event). Defaults to discarding.
	Logger *slog.Logger
}

// DeadLetterLogInterval is how often at most the relay logs each kind of
// warning (dead letters made, messages failed): the first at once, those
// that follow within the interval in one line with their count, the next
// time one happens or a message is handled after the interval.
const DeadLetterLogInterval = 10 * time.Second

// maxTracked bounds the handler's memory of failing messages.
const maxTracked = 1024

// RelayHandler decides what becomes of each outbox message: its events'
// notifications are expanded into deliveries, or the message, or one of
// its events, is set aside as a dead letter with the reason, so that
// nothing in the outbox ever blocks the messages behind it. Its rules:
//
//   - A message that is not a Herald message (Malformed, or over
//     MaxOutboxMessageBytes) is dead-lettered whole, and acked.
//   - An event of a type that has no rule is dead-lettered alone, in a form
//     that can be replayed once the rule is deployed; the other events of
//     its message proceed.
//   - A transient store failure (see RelayStore.IsTransient), or any
//     failure once ctx has ended, is returned: the message is redelivered
//     later, however often that takes, and never dead-lettered for it.
//   - A deterministic failure is returned MaxTries-1 times; at the
//     MaxTries-th try the events are expanded in halves under savepoints,
//     down to single events, and only the events that fail alone are
//     dead-lettered with the reason: the good events are delivered. Should
//     that outlast ctx (many failing events), the next try starts from the
//     verdicts this one reached, so every try gets further.
//   - A panic while handling a message dead-letters the message.
//
// It is safe for concurrent use, though the relay hands it one message at a
// time.
type RelayHandler struct {
	rules    *notification.Rules
	cfg      RelayHandlerConfig
	log      *slog.Logger
	once     sync.Once
	known    map[string]bool
	failures failureCounter
	// verdicts keeps what isolating the message in hand has learned, for
	// its next try.
	verdicts isolationMemo
	// warnings aggregates the relay's warnings (dead letters, failed
	// messages), one line per kind per DeadLetterLogInterval.
	warnings *alarmLog
}

// NewRelayHandler returns a handler that knows the event types of rules,
// which must not be nil. The types are read at the first message: register
// every rule before relaying.
func NewRelayHandler(rules *notification.Rules, cfg RelayHandlerConfig) *RelayHandler {
	if rules == nil {
		panic("app: NewRelayHandler: nil rules")
	}
	if cfg.Topic == "" {
		cfg.Topic = "herald_outbox"
	}
	if cfg.MaxTries <= 0 {
		cfg.MaxTries = 3
	}
	cfg.Now = clockOrDefault(cfg.Now)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &RelayHandler{rules: rules, cfg: cfg, log: cfg.Logger,
		warnings: newAlarmLog(cfg.Logger, DeadLetterLogInterval, nil)}
}

// Handle processes msg with store, under a savepoint so that a failed
// statement leaves store usable, and reports what it did. A nil error means
// the message is done and may be acked (whether expanded or
// dead-lettered); an error means it must be redelivered.
func (h *RelayHandler) Handle(ctx context.Context, store RelayStore, msg RelayMessage) (RelayOutcome, error) {
	h.once.Do(func() {
		h.known = map[string]bool{}
		for _, t := range h.rules.Types() {
			h.known[t] = true
		}
	})
	h.warnings.flush(h.cfg.Now())
	var out RelayOutcome
	err := store.Savepoint(ctx, func(s RelayStore) error { return h.process(ctx, s, msg, false, &out) })
	if err != nil {
		if h.transient(ctx, store, err) {
			// A database outage fails every message, again at each
			// redelivery: one line per interval, with the count.
			h.warnings.add(h.cfg.Now(), "will_retry", slog.LevelWarn,
				"outbox messages failed and will be retried (the latest named)", "message_uuid", msg.ID, "err", err)
			return RelayOutcome{}, err
		}
		tries := h.failures.fail(msg.ID)
		if tries < h.cfg.MaxTries {
			h.warnings.add(h.cfg.Now(), "failed", slog.LevelWarn,
				"outbox messages failed and will be tried again before their failing events are dead-lettered (the latest named)",
				"message_uuid", msg.ID, "tries", tries, "err", err)
			return RelayOutcome{}, err
		}
		out = RelayOutcome{}
		err = store.Savepoint(ctx, func(s RelayStore) error { return h.process(ctx, s, msg, true, &out) })
		if err != nil {
			return RelayOutcome{}, err // transient: isolation dead-letters every deterministic failure
		}
	}
	h.failures.forget(msg.ID)
	h.verdicts.forget()
	return out, nil
}

func (h *RelayHandler) transient(ctx context.Context, store RelayStore, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		store.IsTransient(err)
}

// process handles msg in store. With isolate, the events are expanded under
// savepoints, halving the set until each failure is down to one event,
// which is dead-lettered if it fails for a deterministic reason (a few
// statements per failing event, however many events the message holds);
// otherwise all events are expanded in one call and any failure is
// returned.
func (h *RelayHandler) process(ctx context.Context, store RelayStore, msg RelayMessage, isolate bool, out *RelayOutcome) (err error) {
	defer func() {
		// A panic on one message must not stop the relay or loop forever on
		// redelivery: move the message aside, on a savepoint of its own.
		if p := recover(); p != nil {
			err = store.Savepoint(ctx, func(s RelayStore) error {
				return h.deadLetter(ctx, s, msg, msg.Payload, fmt.Sprintf("relay panicked: %v", p), out)
			})
		}
	}()
	if len(msg.Payload) > MaxOutboxMessageBytes {
		return h.deadLetter(ctx, store, msg, msg.Payload, fmt.Sprintf(
			"outbox message of %d bytes is over the relay's limit of %d (only its first %d bytes are kept)",
			len(msg.Payload), MaxOutboxMessageBytes, maxDeadPayloadKept), out)
	}
	if msg.Malformed != nil {
		return h.deadLetter(ctx, store, msg, msg.Payload, msg.Malformed.Error(), out)
	}
	var known []int
	var unknown []letter
	for i, ev := range msg.Events {
		// Raise validated the event itself; the relay needs only the
		// notification ids, and that this application knows the type (an
		// event from a newer version waits in the dead letters until the
		// rule is deployed, then is replayed).
		if !h.known[ev.Type] {
			reason := fmt.Errorf("event %d: %w: %q", i, notification.ErrUnknownEvent, ev.Type)
			unknown = append(unknown, eventLetter(msg, i, reason.Error()))
			continue
		}
		known = append(known, i)
	}
	if err := h.deadLetters(ctx, store, msg, unknown, out); err != nil {
		return err
	}
	if len(known) == 0 {
		return nil
	}
	if isolate {
		return h.isolate(ctx, store, msg, known, out)
	}
	return h.expand(ctx, store, msg, known, out)
}

// isolate expands events, isolating those that fail, and starts from what
// earlier tries of msg learned: isolating many failing events can outlast
// the ack deadline, which rolls the try's work back, so without the
// verdicts every try would start over and the message would block the
// outbox for good. An event that failed alone is dead-lettered at once
// (its failure is deterministic); the events that expanded are expanded
// together (isolated again should that fail); the rest are isolated.
func (h *RelayHandler) isolate(ctx context.Context, store RelayStore, msg RelayMessage, events []int, out *RelayOutcome) error {
	v := h.verdicts.of(isolationKey(msg))
	var good, unknown []int
	var failed []letter
	for _, i := range events {
		reason, verdict := v.get(i)
		switch {
		case verdict == verdictFails:
			failed = append(failed, eventLetter(msg, i, reason))
		case verdict == verdictExpands:
			good = append(good, i)
		default:
			unknown = append(unknown, i)
		}
	}
	if err := h.deadLetters(ctx, store, msg, failed, out); err != nil {
		return err
	}
	for _, part := range [][]int{good, unknown} {
		if len(part) == 0 {
			continue
		}
		if err := h.expandIsolating(ctx, store, msg, part, out, v); err != nil {
			return err
		}
	}
	return nil
}

// expand expands the events of msg at the given indexes in one call.
func (h *RelayHandler) expand(ctx context.Context, store RelayStore, msg RelayMessage, events []int, out *RelayOutcome) error {
	var ids []uuid.UUID
	for _, i := range events {
		ids = append(ids, msg.Events[i].Notifications...)
	}
	created, err := store.Expand(ctx, ids)
	if err != nil {
		return err
	}
	out.Events += len(events)
	out.Deliveries += created
	return nil
}

// expandIsolating expands events under a savepoint; if that fails for a
// deterministic reason it tries each half, down to single events, which it
// dead-letters with the reason. A transient failure is returned.
// Each verdict is recorded in v.
func (h *RelayHandler) expandIsolating(ctx context.Context, store RelayStore, msg RelayMessage, events []int, out *RelayOutcome, v *verdicts) error {
	var part RelayOutcome
	err := store.Savepoint(ctx, func(s RelayStore) error { return h.expand(ctx, s, msg, events, &part) })
	switch {
	case err == nil:
		out.Events += part.Events
		out.Deliveries += part.Deliveries
		v.set(events, verdictExpands, "")
		return nil
	case h.transient(ctx, store, err):
		return err
	case len(events) == 1:
		reason := fmt.Sprintf("event %d: expansion failed %d times: %v", events[0], h.cfg.MaxTries, err)
		v.set(events, verdictFails, reason)
		return h.deadLetters(ctx, store, msg, []letter{eventLetter(msg, events[0], reason)}, out)
	}
	mid := len(events) / 2
	if err := h.expandIsolating(ctx, store, msg, events[:mid], out, v); err != nil {
		return err
	}
	return h.expandIsolating(ctx, store, msg, events[mid:], out, v)
}

// letter is one dead letter of a message: what it keeps, and why.
type letter struct {
	payload []byte
	reason  string
}

// eventLetter sets event i of msg aside, in the form in which it can be
// replayed on its own; the other events of msg proceed.
func eventLetter(msg RelayMessage, i int, reason string) letter {
	payload := msg.Payload
	if msg.EncodeEvent != nil {
		if alone, err := msg.EncodeEvent(i); err == nil {
			payload = alone
		}
	}
	return letter{payload: payload, reason: reason}
}

// deadLetter stores payload as a dead letter of msg (see deadLetters).
func (h *RelayHandler) deadLetter(ctx context.Context, store RelayStore, msg RelayMessage, payload []byte, reason string, out *RelayOutcome) error {
	return h.deadLetters(ctx, store, msg, []letter{{payload: payload, reason: reason}}, out)
}

// deadLetters stores letters as dead letters of msg, in one statement under
// a savepoint; when that fails for a deterministic reason it stores them
// again without the metadata: whatever the metadata held, the letters
// themselves must be stored.
func (h *RelayHandler) deadLetters(ctx context.Context, store RelayStore, msg RelayMessage, letters []letter, out *RelayOutcome) error {
	if len(letters) == 0 {
		return nil
	}
	now := h.cfg.Now()
	dls := make([]DeadLetter, len(letters))
	for i, l := range letters {
		payload := l.payload
		if len(payload) > MaxOutboxMessageBytes {
			payload = payload[:maxDeadPayloadKept]
		}
		dls[i] = DeadLetter{
			Topic: h.cfg.Topic, MessageUUID: msg.ID, Payload: payload, Metadata: msg.Metadata,
			Reason: l.reason, CreatedAt: now,
		}
	}
	err := store.Savepoint(ctx, func(s RelayStore) error { return s.AddDeadLetters(ctx, dls) })
	if err != nil && !h.transient(ctx, store, err) {
		for i := range dls {
			dls[i].Metadata = nil
		}
		err = store.AddDeadLetters(ctx, dls)
	}
	if err != nil {
		return err
	}
	out.DeadLetters += len(dls)
	for _, l := range letters {
		h.warnings.add(now, "dead_letter", slog.LevelWarn, "outbox messages moved to dead letters (the latest named)",
			"message_uuid", msg.ID, "reason", l.reason)
	}
	return nil
}

// failureCounter counts, per message id, the deterministic failures of
// messages not yet through. It forgets everything when it holds maxTracked
// entries (messages are handled one at a time, so it rarely holds more than
// one).
type failureCounter struct {
	mu    sync.Mutex
	tries map[string]int
}

// fail records one more failure of message id and returns the count.
func (c *failureCounter) fail(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tries == nil || len(c.tries) >= maxTracked {
		c.tries = map[string]int{}
	}
	c.tries[id]++
	return c.tries[id]
}

// forget drops message id, which went through.
func (c *failureCounter) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tries, id)
}

// verdict is what isolating an event found.
type verdict int

const (
	verdictUnknown verdict = iota
	verdictExpands         // it expanded, in a group that succeeded
	verdictFails           // it failed alone, for a deterministic reason
)

// verdicts are the verdicts on one message's events, by index.
type verdicts struct {
	mu      sync.Mutex
	of      map[int]verdict
	reasons map[int]string
}

func (v *verdicts) get(i int) (string, verdict) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reasons[i], v.of[i]
}

func (v *verdicts) set(events []int, verdict verdict, reason string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, i := range events {
		v.of[i] = verdict
		if reason != "" {
			v.reasons[i] = reason
		}
	}
}

// isolationKey names msg for its verdicts: its id, which outbox rows need
// not hold uniquely, and a digest of its payload.
func isolationKey(msg RelayMessage) string {
	sum := sha256.Sum256(msg.Payload)
	return msg.ID + "/" + hex.EncodeToString(sum[:])
}

// isolationMemo holds the verdicts of the one message being isolated (the
// relay handles one message at a time): at most a message's events, which
// Raise bounds.
type isolationMemo struct {
	mu       sync.Mutex
	id       string
	verdicts *verdicts
}

// of returns the verdicts of the message isolationKey names id, forgetting
// another message's.
func (m *isolationMemo) of(id string) *verdicts {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.verdicts == nil || m.id != id {
		m.id, m.verdicts = id, &verdicts{of: map[int]verdict{}, reasons: map[int]string{}}
	}
	return m.verdicts
}

// forget drops the verdicts held: a message went through, so the one
// being isolated is done (messages are acknowledged in order), whether it
// was this one or another relay finished it.
func (m *isolationMemo) forget() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.id, m.verdicts = "", nil
}
