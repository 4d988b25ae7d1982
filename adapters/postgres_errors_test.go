package adapters_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/herald-push/herald/adapters"
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
		// A binary deployed before its migration ran, or a grant revoked:
		// an operator mends it, and the events must still be there.
		{"column not migrated yet", pg("42703"), true},
		{"table not migrated yet", pg("42P01"), true},
		{"privilege revoked", pg("42501"), true},
		{"login refused", pg("28P01"), true},
		{"index row too large", pg("54000"), false},
		{"invalid text", pg("22021"), false},
		{"not null violation", pg("23502"), false},
		{"raised by a trigger", pg("P0001"), false},
		{"internal error", pg("XX000"), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := adapters.IsTransient(c.err); got != c.transient {
				t.Errorf("IsTransient(%v) = %v, want %v", c.err, got, c.transient)
			}
		})
	}
}
