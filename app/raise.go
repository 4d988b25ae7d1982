package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/herald-push/herald/notification"
)

// Raised is one event with the notifications its rule produced.
type Raised struct {
	Event         notification.Event
	Notifications []*notification.Notification
}

// RaiseTx is what raising needs from the host's open transaction: storing
// the notifications and appending the events to the outbox, each in one
// round trip per batch. Both writes belong to the host's transaction, so a
// rollback undoes them together.
type RaiseTx interface {
	AddNotifications(ctx context.Context, ns []*notification.Notification) error
	AppendEvents(ctx context.Context, raised []Raised) error
}

// RaiserConfig configures a Raiser.
type RaiserConfig struct {
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// NewID makes notification ids. Defaults to uuid.NewV7 (time-ordered).
	NewID func() (uuid.UUID, error)
}

// Raiser turns domain events into notifications with the host's rules and
// writes both through a RaiseTx. It is safe for concurrent use.
type Raiser struct {
	rules *notification.Rules
	now   func() time.Time
	newID func() (uuid.UUID, error)
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
	return &Raiser{rules: rules, now: clockOrDefault(cfg.Now), newID: newID}
}

// Raise applies each event's rule, validates the notifications, and writes
// them and the events through tx. Nothing is written when any event or
// notification is invalid: the error names the event's index and wraps
// notification.ErrUnknownEvent, the event's validation error, or the
// notification's *FieldError / *PayloadTooLargeError. On error the host's
// transaction is left as it was, still usable. It returns the notifications
// created, in event order.
func (r *Raiser) Raise(ctx context.Context, tx RaiseTx, events ...notification.Event) ([]*notification.Notification, error) {
	raised, all, err := r.Prepare(events...)
	if err != nil {
		return nil, err
	}
	if len(raised) == 0 {
		return nil, nil
	}
	if err := tx.AddNotifications(ctx, all); err != nil {
		return nil, fmt.Errorf("store notifications: %w", err)
	}
	if err := tx.AppendEvents(ctx, raised); err != nil {
		return nil, fmt.Errorf("append events to outbox: %w", err)
	}
	return all, nil
}

// Prepare applies the rules and validates without writing anything. Raise
// calls it; it is exported for callers that batch writes themselves.
func (r *Raiser) Prepare(events ...notification.Event) ([]Raised, []*notification.Notification, error) {
	now := r.now()
	raised := make([]Raised, 0, len(events))
	var all []*notification.Notification
	var errs []error
	for i, ev := range events {
		drafts, err := r.rules.Drafts(ev)
		if err != nil {
			errs = append(errs, fmt.Errorf("event %d: %w", i, err))
			continue
		}
		ns := make([]*notification.Notification, 0, len(drafts))
		for j, d := range drafts {
			id, err := r.newID()
			if err != nil {
				return nil, nil, fmt.Errorf("new notification id: %w", err)
			}
			n, err := notification.NewNotification(id, d, now)
			if err != nil {
				errs = append(errs, fmt.Errorf("event %d (%s), notification %d: %w", i, ev.EventType(), j, err))
				continue
			}
			ns = append(ns, n)
		}
		if len(ns) > 0 { // an event that notifies nobody needs no outbox entry
			raised = append(raised, Raised{Event: ev, Notifications: ns})
			all = append(all, ns...)
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return raised, all, nil
}
