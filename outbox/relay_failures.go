package outbox

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// maxTries is how many times the relay tries a message that fails for a
// deterministic reason before it isolates the failing events and
// dead-letters them.
const maxTries = 3

// maxTracked bounds the relay's memory of failing messages.
const maxTracked = 1024

// transient reports whether err, met while expanding under ctx, may go away
// by itself: the connection or the server went away, a serialization
// failure or deadlock, a canceled query or ended context, too many
// connections or another lack of resources. Everything else is
// deterministic (an oversized index row, a data exception, a constraint
// violation...): trying again fails the same way.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "25"),          // invalid transaction state: the subscriber's transaction, not the data
			strings.HasPrefix(pgErr.Code, "53"),          // insufficient resources, too many connections
			strings.HasPrefix(pgErr.Code, "57"),          // operator intervention: query canceled, admin shutdown
			strings.HasPrefix(pgErr.Code, "58"),          // system error (I/O)
			pgErr.Code == "40001", pgErr.Code == "40P01", // serialization failure, deadlock
			pgErr.Code == "55P03": // lock not available
			return true
		}
		return false
	}
	// Not an answer from the server: the connection broke or timed out
	// (pgconn.SafeToRetry, pgconn.Timeout, EOF, a closed connection or
	// transaction). The relay's own parameters always encode, so no
	// client-side error depends on the data.
	return true
}

// failureCounter counts, per message UUID, the deterministic failures of
// messages not yet through. It forgets everything when it holds maxTracked
// entries (messages are handled one at a time, so it rarely holds more than
// one).
type failureCounter struct {
	mu    sync.Mutex
	tries map[string]int
}

// fail records one more failure of message id and returns the count.
func (c *failureCounter) fail(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tries == nil || len(c.tries) >= maxTracked {
		c.tries = map[string]int{}
	}
	c.tries[id]++
	return c.tries[id]
}

// forget drops message id, which went through.
func (c *failureCounter) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tries, id)
}
