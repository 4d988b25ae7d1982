package notification

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Event is a domain event raised by the host application inside its own
// transaction. Its EventType must be stable: it names the event in the
// outbox. Events travel as JSON, so their fields must marshal.
type Event interface {
	EventType() string
}

// Validator is implemented by events that can check themselves. Rules
// validates such events when they are raised and when they are decoded.
type Validator interface {
	Validate() error
}

// Rules maps each event type to the rule that turns an event of that type
// into notifications. A host application registers its own event types with
// On; Herald's code does not change. Register everything before use: Rules
// is safe for concurrent reads, not for registering while in use.
type Rules struct {
	byType map[string]rule
}

type rule struct {
	decode func([]byte) (Event, error)
	apply  func(Event) ([]Draft, error)
}

// NewRules returns an empty rule set.
func NewRules() *Rules {
	return &Rules{byType: map[string]rule{}}
}

// On registers rule for events of type E, named by E's zero value's
// EventType (so E should be a struct type, not a pointer). It fails with
// ErrDuplicateRule if the type already has a rule.
func On[E Event](r *Rules, fn func(E) ([]Draft, error)) error {
	var zero E
	typ := zero.EventType()
	if typ == "" {
		return fmt.Errorf("register %T: %w", zero, &FieldError{Field: "event_type", Err: ErrRequired})
	}
	if _, ok := r.byType[typ]; ok {
		return fmt.Errorf("%w: %s", ErrDuplicateRule, typ)
	}
	r.byType[typ] = rule{
		decode: func(data []byte) (Event, error) {
			var e E
			if err := json.Unmarshal(data, &e); err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrMalformedEvent, typ, err)
			}
			return e, nil
		},
		apply: func(ev Event) ([]Draft, error) {
			e, ok := ev.(E)
			if !ok {
				return nil, fmt.Errorf("%w: %s registered for %T, got %T", ErrMalformedEvent, typ, zero, ev)
			}
			return fn(e)
		},
	}
	return nil
}

// Drafts validates ev and applies its rule. It fails with ErrUnknownEvent
// when no rule is registered for ev's type, with the event's own validation
// error, or with the rule's error.
func (r *Rules) Drafts(ev Event) ([]Draft, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: nil event", ErrMalformedEvent)
	}
	rl, ok := r.byType[ev.EventType()]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownEvent, ev.EventType())
	}
	if err := validate(ev); err != nil {
		return nil, err
	}
	return rl.apply(ev)
}

// Decode rebuilds an event of type eventType from its JSON. It fails with
// ErrUnknownEvent or ErrMalformedEvent.
func (r *Rules) Decode(eventType string, data []byte) (Event, error) {
	rl, ok := r.byType[eventType]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownEvent, eventType)
	}
	ev, err := rl.decode(data)
	if err != nil {
		return nil, err
	}
	if err := validate(ev); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedEvent, err)
	}
	return ev, nil
}

// Types lists the registered event types, sorted.
func (r *Rules) Types() []string {
	types := make([]string, 0, len(r.byType))
	for t := range r.byType {
		types = append(types, t)
	}
	sort.Strings(types)
	return types
}

func validate(ev Event) error {
	if v, ok := ev.(Validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("event %s: %w", ev.EventType(), err)
		}
	}
	return nil
}
