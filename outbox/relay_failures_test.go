package outbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestOnlyFailuresThatCanPassByThemselvesAreRetriedForever(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return fmt.Errorf("expand: %w", &pgconn.PgError{Code: code}) }
	cases := []struct {
		name      string
		err       error
		transient bool
	}{
		{"connection failure", pg("08006"), true},
		{"serialization failure", pg("40001"), true},
		{"deadlock", pg("40P01"), true},
		{"query canceled", pg("57014"), true},
		{"admin shutdown", pg("57P01"), true},
		{"too many connections", pg("53300"), true},
		{"context deadline", fmt.Errorf("expand: %w", context.DeadlineExceeded), true},
		{"connection lost mid-statement", fmt.Errorf("expand: %w", io.ErrUnexpectedEOF), true},
		{"index row too large", pg("54000"), false},
		{"invalid text", pg("22021"), false},
		{"not null violation", pg("23502"), false},
		{"raised by a trigger", pg("P0001"), false},
		{"internal error", pg("XX000"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := transient(context.Background(), c.err); got != c.transient {
				t.Errorf("transient(%v) = %v, want %v", c.err, got, c.transient)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if !transient(ctx, errors.New("anything")) {
		t.Error("a failure after the context ended must be retried")
	}
}

func TestFailureCounterStaysBounded(t *testing.T) {
	t.Parallel()
	var c failureCounter
	for i := range 3 * maxTracked {
		c.fail(fmt.Sprint(i))
	}
	if len(c.tries) > maxTracked {
		t.Fatalf("tracks %d messages, more than %d", len(c.tries), maxTracked)
	}
	if c.fail("m") != 1 || c.fail("m") != 2 {
		t.Fatal("counts per message")
	}
	c.forget("m")
	if c.fail("m") != 1 {
		t.Fatal("forgets a message that went through")
	}
}
