// Package backoff is the capped exponential backoff with jitter with which
// Herald's long-running parts (relay, sender, broadcast expander) retry
// infrastructure errors. Deliveries are not retried with it: they follow
// notification.RetryPolicy.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields waits in a window that doubles from base up to max; each
// wait is between half and all of the window. It is not safe for
// concurrent use: each loop keeps its own.
type Backoff struct {
	base, max, cur time.Duration
}

// New returns a Backoff whose window starts at base and doubles up to max.
func New(base, max time.Duration) *Backoff { return &Backoff{base: base, max: max} }

// Next returns the next wait and widens the window.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur/2 + time.Duration(rand.Int64N(int64(b.cur/2)+1))
}

// Reset starts the window at base again, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits d or until ctx ends; it reports whether the full wait passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
