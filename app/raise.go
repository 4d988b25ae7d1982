package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/herald-push/herald/notification"
)

// MaxEventBytes bounds the JSON of one raised event (1 MiB), so that every
// outbox message stays small enough for the relay to handle in one short
// transaction. Raise refuses a larger event with a *notification.FieldError
// wrapping ErrTooLong.
const MaxEventBytes = 1 << 20

// maxRaiseErrors bounds the errors Raise names: a rule returning a
// hundred thousand bad drafts made an error of 7 MB of text. The rest are
// counted in one more error.
const maxRaiseErrors = 100

// Raised is one event with the notifications its rule produced and its JSON
// encoding, as it travels in the outbox.
type Raised struct {
	// Index is the event's position among those raised, for errors.
	Index         int
	Event         notification.Event
	Data          json.RawMessage
	Notifications []*notification.Notification
}

// RaiseTx is what raising needs from the host's open transaction: storing
// the notifications and appending the events to the outbox, in a few round
// trips per batch. Both writes belong to the host's transaction, so a
// rollback undoes them together.
//
// Write must be all or nothing: everything that can fail without the
// database (encoding the outbox entries, making their ids) must fail before
// its first write, so such an error leaves the transaction untouched and
// usable. A database error aborts the host's transaction, as any failed
// statement does, so it can never commit half of the writes.
//
// It returns the notifications as stored, in the order of ns: where a
// notification's idempotency key was already taken by an earlier one of the
// same recipient (in this transaction, or committed by another), the
// earlier one in its place. Such a duplicate is not stored, and no outbox
// event is written for a raise whose notifications are all duplicates.
//
// Now reads the database's clock in the transaction, as Write's statements
// read it when they stamp the notifications' creation: whether an
// ExpiresAt has passed is the database's call, never one server's. Like
// any statement, a failure aborts the host's transaction.
type RaiseTx interface {
	Write(ctx context.Context, ns []*notification.Notification, raised []Raised) ([]*notification.Notification, error)
	Now(ctx context.Context) (time.Time, error)
}

// NotificationWriter stores notifications; the outbox makes one on the
// host's transaction (package adapters implements it on Postgres), so the
// notifications commit or roll back with the host's own writes.
//
// Add returns the notifications as stored, in the order of ns: the same
// pointer for one it inserted (its creation time, and the end of its
// idempotency window, restamped by the database's clock), the existing
// notification for one whose idempotency key the recipient already holds
// within its window (by the database's clock). When
// another open transaction holds the key, Add waits for it: if it commits,
// its notification is returned; if it rolls back, this one is inserted.
type NotificationWriter interface {
	Add(ctx context.Context, ns []*notification.Notification) ([]*notification.Notification, error)
}

// RaiserConfig configures a Raiser.
type RaiserConfig struct {
	// Now is the clock that gives a notification its provisional creation
	// time, replaced by the database's when it is stored. Defaults to
	// time.Now.
	Now func() time.Time
	// NewID makes notification ids. Defaults to uuid.NewV7 (time-ordered).
	NewID func() (uuid.UUID, error)
	// IdempotencyWindow is how long a draft's idempotency key holds when
	// the draft does not say. Defaults to
	// notification.DefaultIdempotencyWindow (24h).
	IdempotencyWindow time.Duration
}

// Validate reports every invalid field at once.
func (c RaiserConfig) Validate() error {
	if c.IdempotencyWindow < 0 || c.IdempotencyWindow > notification.MaxIdempotencyWindow {
		return fmt.Errorf("IdempotencyWindow must be between 0 and %s", notification.MaxIdempotencyWindow)
	}
	return nil
}

// WithDefaults returns c with every zero setting at its default.
func (c RaiserConfig) WithDefaults() RaiserConfig {
	if c.IdempotencyWindow == 0 {
		c.IdempotencyWindow = notification.DefaultIdempotencyWindow
	}
	return c
}

// Raiser turns domain events into notifications with the host's rules and
// writes both through a RaiseTx. It is safe for concurrent use.
type Raiser struct {
	rules  *notification.Rules
	now    func() time.Time
	newID  func() (uuid.UUID, error)
	window time.Duration
}

// NewRaiser returns a Raiser applying rules. rules must not be nil.
func NewRaiser(rules *notification.Rules, cfg RaiserConfig) *Raiser {
	if rules == nil {
		panic("app: NewRaiser: nil rules")
	}
	newID := cfg.NewID
	if newID == nil {
		newID = uuid.NewV7
	}
	return &Raiser{rules: rules, now: clockOrDefault(cfg.Now), newID: newID, window: cfg.WithDefaults().IdempotencyWindow}
}

// Raise applies each event's rule, validates the notifications, encodes the
// events, and writes them all through tx. Nothing is written when any event
// or notification is invalid or any event does not encode: the error names
// each problem's event index (the first 100 problems, then a count of the
// rest) and wraps notification.ErrUnknownEvent,
// ErrMalformedEvent, the event's validation error, or the notification's
// *FieldError / *PayloadTooLargeError. On such an error the host's
// transaction is left as it was, still usable; a database error aborts it
// (see RaiseTx). An ExpiresAt the database's clock says has passed fails
// the same way, wrapping notification.ErrExpiresTooEarly, before anything
// is written. It returns the notifications in event order: those
// created, and for a draft whose idempotency key its recipient already
// holds, the notification raised first with that key.
func (r *Raiser) Raise(ctx context.Context, tx RaiseTx, events ...notification.Event) ([]*notification.Notification, error) {
	raised, all, err := r.Prepare(events...)
	if err != nil {
		return nil, err
	}
	if len(raised) == 0 {
		return nil, nil
	}
	if err := checkExpiries(ctx, tx, raised); err != nil {
		return nil, err
	}
	return tx.Write(ctx, all, raised)
}

// checkExpiries refuses the notifications whose ExpiresAt the database's
// clock says has passed. This server's clock may run minutes off the
// database's: judged by it, a replica running ahead refused an expiry
// still to come and one running behind stored one already passed. The
// database is asked only when some notification has an expiry, one round
// trip whatever their number.
func checkExpiries(ctx context.Context, tx RaiseTx, raised []Raised) error {
	var now time.Time
	var errs []error
	more := 0
	for _, rd := range raised {
		for j, n := range rd.Notifications {
			if n.ExpiresAt().IsZero() {
				continue
			}
			if now.IsZero() {
				var err error
				if now, err = tx.Now(ctx); err != nil {
					return fmt.Errorf("read the database's clock: %w", err)
				}
			}
			if err := n.CheckExpiry(now); err != nil {
				// Prepare returned no error, so every draft made a
				// notification: j is the draft's index.
				if len(errs) < maxRaiseErrors {
					errs = append(errs, fmt.Errorf("event %d (%s), notification %d: %w", rd.Index, rd.Event.EventType(), j, err))
				} else {
					more++
				}
			}
		}
	}
	if more > 0 {
		errs = append(errs, fmt.Errorf("and %d more invalid events or notifications", more))
	}
	return errors.Join(errs...)
}

// Prepare applies the rules, validates and encodes each event as JSON,
// without writing anything: an event that does not encode (a NaN float, a
// channel, a failing MarshalJSON) fails here with
// notification.ErrMalformedEvent, one whose JSON is over MaxEventBytes with
// notification.ErrTooLong. Raise calls it; it is exported for callers
// that batch writes themselves. It does not judge whether an ExpiresAt has
// passed: that takes the database's clock, which Raise reads.
func (r *Raiser) Prepare(events ...notification.Event) ([]Raised, []*notification.Notification, error) {
	now := r.now()
	raised := make([]Raised, 0, len(events))
	var all []*notification.Notification
	var errs []error
	more := 0
	fail := func(err error) {
		if len(errs) < maxRaiseErrors {
			errs = append(errs, err)
		} else {
			more++
		}
	}
	for i, ev := range events {
		drafts, err := r.rules.Drafts(ev)
		if err != nil {
			fail(fmt.Errorf("event %d: %w", i, err))
			continue
		}
		ns := make([]*notification.Notification, 0, len(drafts))
		for j, d := range drafts {
			if d.IdempotencyKey != "" && d.IdempotencyWindow == 0 {
				d.IdempotencyWindow = r.window
			}
			id, err := r.newID()
			if err != nil {
				return nil, nil, fmt.Errorf("new notification id: %w", err)
			}
			n, err := notification.NewNotification(id, d, now)
			if err != nil {
				fail(fmt.Errorf("event %d (%s), notification %d: %w", i, ev.EventType(), j, err))
				continue
			}
			ns = append(ns, n)
		}
		if len(ns) == 0 { // an event that notifies nobody needs no outbox entry
			continue
		}
		data, err := json.Marshal(ev)
		if err != nil {
			fail(fmt.Errorf("event %d (%s): %w: does not encode as JSON: %w",
				i, ev.EventType(), notification.ErrMalformedEvent, err))
			continue
		}
		if !utf8.Valid(data) {
			// A custom MarshalJSON may emit raw bytes json.Marshal does not
			// check; Postgres would refuse them after the notifications were
			// written, and the host's transaction would be lost.
			fail(fmt.Errorf("event %d (%s): %w: its JSON is not valid UTF-8",
				i, ev.EventType(), notification.ErrMalformedEvent))
			continue
		}
		if len(data) > MaxEventBytes {
			fail(fmt.Errorf("event %d (%s): its JSON is %d bytes, more than %d: %w",
				i, ev.EventType(), len(data), MaxEventBytes, &notification.FieldError{Field: "event", Err: notification.ErrTooLong}))
			continue
		}
		raised = append(raised, Raised{Index: i, Event: ev, Data: data, Notifications: ns})
		all = append(all, ns...)
	}
	if more > 0 {
		errs = append(errs, fmt.Errorf("and %d more invalid events or notifications", more))
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return raised, all, nil
}
