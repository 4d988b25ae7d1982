package migrations

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrBehind is matched (errors.Is) by a *VersionError: the database lacks
// migrations this binary embeds, and Up must run before Herald can work.
var ErrBehind = errors.New("database schema is behind this herald binary: run migrations.Up")

// VersionError reports a database whose schema lacks migrations this binary
// embeds. It matches ErrBehind.
type VersionError struct {
	// Have is the highest version recorded in herald_schema_migrations (0
	// when the table is missing or empty); Want is the highest version this
	// binary embeds.
	Have, Want int
	// Missing lists the embedded versions not applied, in order.
	Missing []int
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("database schema is behind this herald binary (database at version %d, binary needs %d, missing %v): run migrations.Up (or `herald migrate up`)",
		e.Have, e.Want, e.Missing)
}

// Is makes errors.Is(err, ErrBehind) true.
func (e *VersionError) Is(target error) bool { return target == ErrBehind }

// Latest returns the highest migration version this binary embeds.
func Latest() (int, error) {
	all, err := All()
	if err != nil {
		return 0, err
	}
	if len(all) == 0 {
		return 0, nil
	}
	return all[len(all)-1].Version, nil
}

// Check compares the migrations recorded in pool's database with those
// embedded. It returns a *VersionError (errors.Is ErrBehind) when any
// embedded migration is not recorded, a missing herald_schema_migrations
// table included; nil when every one is, and ahead reports whether the
// database also records versions this binary does not know (a newer binary
// migrated it: Herald's migrations only add, so an older binary keeps
// working). Any other error is the database's, such as an unreachable
// server; it is not an ErrBehind. Check only reads: it never creates the
// table nor takes the migration lock.
//
// A host that applies FS with its own tool records each version it applied
// in herald_schema_migrations (version, name) so that Check sees it.
func Check(ctx context.Context, pool *pgxpool.Pool) (ahead bool, err error) {
	all, err := All()
	if err != nil {
		return false, err
	}
	rows, err := pool.Query(ctx, `SELECT version FROM herald_schema_migrations`)
	var versions []int
	if err == nil {
		versions, err = pgx.CollectRows(rows, pgx.RowTo[int])
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table: never migrated
	case err != nil:
		return false, fmt.Errorf("read applied migrations: %w", err)
	}
	done := make(map[int]bool, len(versions))
	have := 0
	for _, v := range versions {
		done[v] = true
		have = max(have, v)
	}
	latest := 0
	var missing []int
	for _, m := range all {
		latest = m.Version
		if !done[m.Version] {
			missing = append(missing, m.Version)
		}
	}
	if len(missing) > 0 {
		return false, &VersionError{Have: have, Want: latest, Missing: missing}
	}
	return have > latest, nil
}
