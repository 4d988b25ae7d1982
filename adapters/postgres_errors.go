package adapters

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// IsTransient reports whether err, returned by pgx, may go away by itself:
// the connection or the server went away, a serialization failure or
// deadlock, a canceled query or an ended context, too many connections or
// another lack of resources, or the environment rather than the data: a
// schema older than the code (a binary deployed before its migration ran),
// a privilege revoked, a login refused, a feature or database missing, a
// prepared statement lost by a transaction pooler; an
// operator fixes those, and the events must then still be there.
// Everything else is deterministic (an oversized index row, a data
// exception, a constraint violation...): trying again fails the same way.
func IsTransient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "25"),          // invalid transaction state: the transaction, not the data
			strings.HasPrefix(pgErr.Code, "53"),          // insufficient resources, too many connections
			strings.HasPrefix(pgErr.Code, "57"),          // operator intervention: query canceled, admin shutdown
			strings.HasPrefix(pgErr.Code, "58"),          // system error (I/O)
			strings.HasPrefix(pgErr.Code, "42"),          // undefined table or column, insufficient privilege
			strings.HasPrefix(pgErr.Code, "0A"),          // feature not supported
			strings.HasPrefix(pgErr.Code, "28"),          // invalid authorization
			strings.HasPrefix(pgErr.Code, "3D"),          // invalid catalog (database) name
			strings.HasPrefix(pgErr.Code, "3F"),          // invalid schema name
			pgErr.Code == "26000",                        // prepared statement missing: a transaction pooler lost it
			pgErr.Code == "40001", pgErr.Code == "40P01", // serialization failure, deadlock
			pgErr.Code == "55P03": // lock not available
			return true
		}
		return false
	}
	// Not an answer from the server: the connection broke or timed out
	// (pgconn.SafeToRetry, pgconn.Timeout, EOF, a closed connection or
	// transaction). Herald's own parameters always encode, so no
	// client-side error depends on the data.
	return true
}

// lostRaceAttempts is how many times a statement a host waits for is run
// when it keeps losing a deadlock or a serialization race.
const lostRaceAttempts = 5

// retryLostRace runs do, and runs it again, up to lostRaceAttempts times in
// all, while it fails because Postgres chose it as the victim of a deadlock
// (40P01) or of a serialization race (40001): the statement was rolled
// back whole, and running it again is the way through. Herald's own
// statements lock rows in one order (see the package documentation), so
// they do not deadlock each other; a transaction Herald does not control
// (the relay's, which expands notifications in watermill's transaction, or
// one of the host's) may still lock the same rows in another order, and a
// host's registration must not fail because of it. On a pgx.Tx nothing is
// retried: the caller's transaction is aborted, and only its owner can run
// it again.
func retryLostRace(ctx context.Context, db DB, do func() error) error {
	_, inTx := db.(pgx.Tx)
	for attempt := 1; ; attempt++ {
		err := do()
		var pgErr *pgconn.PgError
		if err == nil || inTx || attempt == lostRaceAttempts ||
			!errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "40001") {
			return err
		}
		// The winner goes on at once; a short pause lets it finish.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
		}
	}
}
