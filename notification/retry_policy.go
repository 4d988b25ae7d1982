package notification

import "time"

// RetryPolicy decides when a transiently failed delivery is tried again.
type RetryPolicy struct {
	// MaxAttempts is how many pushes a delivery gets before it fails for good.
	MaxAttempts int
	// BaseDelay is the shortest wait before a retry. It should outlast the
	// FCM SDK's own retries (about 7 s), so Herald's ladder starts after them.
	BaseDelay time.Duration
	// MaxDelay caps the wait (Retry-After may still ask for longer).
	MaxDelay time.Duration
}

// Delay returns the wait before the next attempt after the attempt-th
// failure: BaseDelay plus full jitter over an exponentially growing window
// (BaseDelay doubled per failure), capped at MaxDelay, and never less than
// retryAfter. jitter is a random number in [0, 1).
func (p RetryPolicy) Delay(attempt int, retryAfter time.Duration, jitter float64) time.Duration {
	window := p.BaseDelay
	for i := 1; i < attempt && window < p.MaxDelay; i++ {
		window *= 2
	}
	d := p.BaseDelay + time.Duration(jitter*float64(window))
	if p.MaxDelay > 0 && d > p.MaxDelay {
		d = p.MaxDelay
	}
	if d < retryAfter {
		d = retryAfter
	}
	return d
}
