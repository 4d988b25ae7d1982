package outbox

import (
	"errors"
	"sync"
)

// errStopping nacks a message that reached the handler after Run's context
// ended: it stays in the outbox for the next run.
var errStopping = errors.New("outbox relay: stopping")

// drain lets a relay stop without pulling the subscriber's transaction from
// under a running handler.
//
// watermill-sql ends a message's wait as soon as its context ends, then
// commits or rolls back the subscriber's transaction from its own goroutine,
// while the handler may still be running statements on that same
// connection (a data race in pgx, seen as "conn busy" and "conn closed"
// errors at every shutdown under load). So Run's context never reaches the
// subscriber directly: when it ends, the drain turns new messages away,
// waits for the handler in flight, and only then is the subscriber closed
// (committing what was acked) and the router's own context cancelled.
type drain struct {
	mu       sync.Mutex
	stopping bool
	busy     int
	idle     chan struct{}
}

func newDrain() *drain { return &drain{idle: make(chan struct{})} }

// enter reports whether a handler may start; if so, it must call leave.
func (d *drain) enter() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return false
	}
	d.busy++
	return true
}

func (d *drain) leave() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.busy--
	if d.stopping && d.busy == 0 {
		close(d.idle)
	}
}

// stop turns new handlers away and returns a channel closed once none is
// running.
func (d *drain) stop() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stopping {
		d.stopping = true
		if d.busy == 0 {
			close(d.idle)
		}
	}
	return d.idle
}
