package herald

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/herald-push/herald/internal/backoff"
	"github.com/herald-push/herald/migrations"
)

// ErrSchemaBehind is matched (errors.Is) by the error of a Raise on a
// database that lacks migrations this binary embeds: run migrations.Up (or
// `herald migrate up`). Run does not return it: it logs it and waits for
// the migration (see Run).
var ErrSchemaBehind = migrations.ErrBehind

// SchemaError carries what ErrSchemaBehind means: the database's highest
// recorded migration (Have), the binary's (Want), and the versions missing.
// Get it with errors.As.
type SchemaError = migrations.VersionError

// schemaRetry bounds how often Run checks again a schema that is behind or
// a database it could not reach.
const schemaRetry = 2 * time.Second

// waitForSchema blocks until the database records every migration this
// binary embeds, and reports false if ctx ended first. A schema behind is
// logged at ERROR once (a rolling deploy may migrate a moment later, so it
// keeps checking every schemaRetry); an unreachable database is logged at
// WARN once and retried with backoff, as every part of Run does; an error
// the server answered (a missing SELECT grant on herald_schema_migrations)
// is logged at ERROR once and retried likewise.
func (h *Herald) waitForSchema(ctx context.Context) bool {
	retry := backoff.New(100*time.Millisecond, schemaRetry)
	var loggedBehind, loggedDown bool
	for {
		ahead, err := migrations.Check(ctx, h.pool)
		var behind *SchemaError
		switch {
		case err == nil:
			if ahead {
				h.log.Warn("database schema is newer than this herald binary; running on, as migrations only add")
			}
			if loggedBehind || loggedDown {
				h.log.Info("database schema is current; herald starts")
			}
			return true
		case ctx.Err() != nil:
			return false
		case errors.As(err, &behind):
			if !loggedBehind {
				loggedBehind = true
				h.log.Error("herald waits for its schema: run migrations.Up (herald migrate up)",
					"schema_version", behind.Have, "want_version", behind.Want, "missing", behind.Missing, "retry_every", schemaRetry)
			}
		default:
			if !loggedDown {
				loggedDown = true
				// A server that answered (permission denied on
				// herald_schema_migrations, say) needs an operator; an
				// unreachable one is the outage Run waits out anyway.
				level, pgErr := slog.LevelWarn, (*pgconn.PgError)(nil)
				if errors.As(err, &pgErr) {
					level = slog.LevelError
				}
				h.log.Log(ctx, level, "herald cannot check its schema yet; retrying", "err", err)
			}
		}
		if !backoff.Sleep(ctx, retry.Next()) {
			return false
		}
	}
}

// explainSchema turns a database error that names a missing relation,
// column or function into one that says the schema is behind, when it is.
// It checks through the pool, with a short deadline so that a host whose
// pool is exhausted by its own transaction gets the raw error rather than a
// hang.
func (h *Herald) explainSchema(ctx context.Context, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	switch pgErr.Code {
	case "42P01", "42703", "42883", "42704": // undefined table, column, function, object
	default:
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	var behind *SchemaError
	if _, checkErr := migrations.Check(ctx, h.pool); errors.As(checkErr, &behind) {
		return fmt.Errorf("%w: %w", behind, err)
	}
	return err
}
