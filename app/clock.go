package app

import "time"

// clockOrDefault returns fn, or time.Now when fn is nil. Services take their clock as
// an optional config field so tests can move time instead of sleeping.
func clockOrDefault(fn func() time.Time) func() time.Time {
	if fn == nil {
		return time.Now
	}
	return fn
}
