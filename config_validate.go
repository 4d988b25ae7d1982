package herald

import (
	"errors"
	"fmt"

	"github.com/herald-push/herald/app"
)

// Validate reports every invalid setting at once, each named by its path in
// Config ("Sender.Lease must not be negative"), always in the same order:
// the parts in field order, each part's fields in field order, then the
// relations between parts. Each part's settings are checked by the package
// that uses them, so New and the parts' own constructors agree. Relations
// are checked on the values in effect, defaults applied:
//
//   - Sender.Lease must be at least twice FCM.SendTimeout: a claimed
//     delivery is pushed only while half its lease remains, so a push that
//     runs to its deadline still ends inside the lease, and no other sender
//     takes the delivery over while it is on the wire.
//   - Sender.Lease must be longer than FCM.SendTimeout plus the time to
//     record a push (Sender.FlushInterval and a round trip to the
//     database): a push starts only while that much of its lease remains,
//     so a shorter lease would give back every claim unpushed, forever.
func (c Config) Validate() error {
	var errs []error
	for _, part := range []struct {
		name string
		err  error
	}{
		{"Relay", c.relay().Validate()},
		{"Sender", c.sender().Validate()},
		{"FCM", c.fcm().Validate()},
		{"Broadcast", c.broadcast().Validate()},
		{"Housekeeping", c.housekeeping().Validate()},
		{"Fleet", c.fleet().Validate()},
		{"Raise", c.raise().Validate()},
		{"Pooler", c.Pooler.validate()},
	} {
		errs = appendPrefixed(errs, part.name, part.err)
	}
	if c.Sender.Lease >= 0 && c.FCM.SendTimeout >= 0 {
		lease, timeout := c.sender().WithDefaults().Lease, c.fcm().WithDefaults().SendTimeout
		if lease < 2*timeout {
			errs = append(errs, fmt.Errorf("Sender.Lease (%s) must be at least twice FCM.SendTimeout (%s)", lease, timeout))
		} else if floor := app.LeaseFloor(timeout, c.sender().WithDefaults().FlushInterval); c.Sender.FlushInterval >= 0 && lease <= floor {
			errs = append(errs, fmt.Errorf("Sender.Lease (%s) must be longer than FCM.SendTimeout and the time to record a push (%s): no push could start", lease, floor))
		}
	}
	return errors.Join(errs...)
}

// appendPrefixed appends each error joined in err to errs, its message
// prefixed with the path of the part it came from.
func appendPrefixed(errs []error, prefix string, err error) []error {
	if err == nil {
		return errs
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			errs = appendPrefixed(errs, prefix, e)
		}
		return errs
	}
	return append(errs, &fieldError{path: prefix, err: err})
}

// fieldError is a part's error with the path of that part in Config.
type fieldError struct {
	path string
	err  error
}

func (e *fieldError) Error() string { return e.path + "." + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }
