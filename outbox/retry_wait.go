package outbox

import (
	"math/rand/v2"
	"time"
)

// retryWait is exponential backoff with jitter: each wait is between half
// and all of a window that doubles from base up to max.
type retryWait struct{ base, max, cur time.Duration }

func newRetryWait(base, max time.Duration) *retryWait { return &retryWait{base: base, max: max} }

func (w *retryWait) next() time.Duration {
	if w.cur == 0 {
		w.cur = w.base
	} else {
		w.cur = min(w.cur*2, w.max)
	}
	return w.cur/2 + time.Duration(rand.Int64N(int64(w.cur/2)+1))
}

func (w *retryWait) reset() { w.cur = 0 }
