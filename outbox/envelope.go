package outbox

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/herald-push/herald/app"
	"github.com/herald-push/herald/notification"
)

// topic is the watermill topic of Herald's outbox (table
// watermill_herald_outbox, created by the migrations).
const topic = "herald_outbox"

// envelopeVersion is the version of the outbox message format.
const envelopeVersion = 1

// maxNotificationsPerMessage bounds one outbox message, so the relay expands
// a large campaign in bounded transactions and statements.
const maxNotificationsPerMessage = 1000

// maxEventBytesPerMessage: events are added to a message while their JSON
// totals less than this, so a message stays far below the relay's
// app.MaxOutboxMessageBytes (one event is at most app.MaxEventBytes, and 1,000 ids
// take some 40 KB).
const maxEventBytesPerMessage = 4 << 20

// envelope is one outbox message: events raised in one host transaction,
// each with the notifications its rule created.
type envelope struct {
	Version int             `json:"v"`
	Events  []envelopeEvent `json:"events"`
}

type envelopeEvent struct {
	Type string `json:"type"`
	// Data is the event's JSON; null in the parts after the first of an
	// event whose notifications were split across messages.
	Data          json.RawMessage `json:"data"`
	Notifications []uuid.UUID     `json:"notifications"`
}

// encodeEnvelopes turns raised events into outbox payloads of at most
// maxNotificationsPerMessage notifications and about maxEventBytesPerMessage
// of event JSON each; an event with more notifications is split across
// messages.
func encodeEnvelopes(raised []app.Raised) ([][]byte, error) {
	var payloads [][]byte
	cur := envelope{Version: envelopeVersion}
	count, size := 0, 0
	emit := func() error {
		if len(cur.Events) == 0 {
			return nil
		}
		b, err := json.Marshal(cur)
		if err != nil {
			return fmt.Errorf("encode outbox message: %w", err)
		}
		payloads = append(payloads, b)
		cur, count, size = envelope{Version: envelopeVersion}, 0, 0
		return nil
	}
	// Every event's notification ids in one array, not one each: a
	// personalised campaign raises an event per notification.
	total := 0
	for _, r := range raised {
		total += len(r.Notifications)
	}
	allIDs := make([]uuid.UUID, 0, total)
	for _, r := range raised {
		data := r.Data
		if data == nil { // raised without app.Raiser.Prepare
			var err error
			if data, err = json.Marshal(r.Event); err != nil {
				return nil, fmt.Errorf("%w: encode event %s: %w", notification.ErrMalformedEvent, r.Event.EventType(), err)
			}
		}
		start := len(allIDs)
		for _, n := range r.Notifications {
			allIDs = append(allIDs, n.ID())
		}
		ids := allIDs[start:]
		for len(ids) > 0 {
			room := maxNotificationsPerMessage - count
			if room == 0 || (count > 0 && size+len(data) > maxEventBytesPerMessage) {
				if err := emit(); err != nil {
					return nil, err
				}
				room = maxNotificationsPerMessage
			}
			take := min(room, len(ids))
			cur.Events = append(cur.Events, envelopeEvent{Type: r.Event.EventType(), Data: data, Notifications: ids[:take]})
			count += take
			size += len(data)
			ids = ids[take:]
			// Only the first part of a split event carries its JSON (the
			// relay reads none; it is for the reader of a dead letter): a
			// copy in every part made one 1 MiB event raised for a million
			// users a gigabyte of outbox, in one statement.
			data = nil
		}
	}
	if err := emit(); err != nil {
		return nil, err
	}
	return payloads, nil
}

// decodeEnvelope parses an outbox payload. It fails with
// notification.ErrMalformedEvent.
func decodeEnvelope(payload []byte) (envelope, error) {
	var env envelope
	if err := json.Unmarshal(payload, &env); err != nil {
		return envelope{}, fmt.Errorf("%w: outbox message: %w", notification.ErrMalformedEvent, err)
	}
	if env.Version != envelopeVersion {
		return envelope{}, fmt.Errorf("%w: outbox message version %d, want %d", notification.ErrMalformedEvent, env.Version, envelopeVersion)
	}
	if len(env.Events) == 0 {
		return envelope{}, fmt.Errorf("%w: outbox message has no events", notification.ErrMalformedEvent)
	}
	// Raise writes an event only with at least one of its notifications, so
	// never more events than notifications. The relay may set each event
	// aside on its own (an unknown type): unbounded, a message would
	// outlast the ack deadline at every try and stall the outbox.
	if len(env.Events) > maxNotificationsPerMessage {
		return envelope{}, fmt.Errorf("%w: outbox message has %d events, more than %d",
			notification.ErrMalformedEvent, len(env.Events), maxNotificationsPerMessage)
	}
	total := 0
	for i, ev := range env.Events {
		if ev.Type == "" {
			return envelope{}, fmt.Errorf("%w: event %d has no type", notification.ErrMalformedEvent, i)
		}
		// Raise refuses a larger event, so this one was not written by Raise.
		if len(ev.Data) > app.MaxEventBytes {
			return envelope{}, fmt.Errorf("%w: event %d is %d bytes of JSON, more than %d",
				notification.ErrMalformedEvent, i, len(ev.Data), app.MaxEventBytes)
		}
		total += len(ev.Notifications)
	}
	// Raise never writes more; the bound keeps the relay's statements small.
	if total > maxNotificationsPerMessage {
		return envelope{}, fmt.Errorf("%w: outbox message names %d notifications, more than %d",
			notification.ErrMalformedEvent, total, maxNotificationsPerMessage)
	}
	return env, nil
}

// encodeEvent wraps one event of a message as a message of its own, the
// form in which a dead-lettered event can be replayed.
func encodeEvent(ev envelopeEvent) ([]byte, error) {
	return json.Marshal(envelope{Version: envelopeVersion, Events: []envelopeEvent{ev}})
}
