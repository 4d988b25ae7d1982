package app

import (
	"context"
	"time"

	"github.com/herald-push/herald/internal/backoff"
)

// clockOrDefault returns fn, or time.Now when fn is nil. Services take their clock as
// an optional config field so tests can move time instead of sleeping.
func clockOrDefault(fn func() time.Time) func() time.Time {
	if fn == nil {
		return time.Now
	}
	return fn
}

// sleep waits d or until ctx ends; it reports whether the full wait passed.
func sleep(ctx context.Context, d time.Duration) bool { return backoff.Sleep(ctx, d) }
