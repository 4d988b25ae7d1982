package herald

import (
	"context"
	"time"

	"github.com/herald-push/herald/internal/backlog"
)

// Idle reports whether Herald has nothing left to do in its database: the
// relay has consumed every committed event, every broadcast is expanded
// (one held by the host's database refusing its deliveries too), and no
// delivery is open (pending, claimed, or scheduled for a retry, due or not). It reads the
// database, so it sees the work of every process running Herald on it. It
// is the same check as testutil.Idle.
func (h *Herald) Idle(ctx context.Context) (bool, error) {
	return backlog.Idle(ctx, h.pool)
}

// WaitIdle waits until Idle is true and returns nil, or returns ctx's error
// if ctx ends first, or Idle's error. It is meant for a host's tests: raise
// in a committed transaction, then WaitIdle with a deadline before asserting
// on what was sent. Idle is never true while a delivery waits for a retry,
// so give the context a deadline longer than the retry policy's delays.
func (h *Herald) WaitIdle(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		idle, err := h.Idle(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
