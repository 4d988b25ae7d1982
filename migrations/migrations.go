// Package migrations holds Herald's schema as embedded, numbered SQL files
// (NNNN_name.up.sql and NNNN_name.down.sql), watermill's outbox tables
// included, and applies them.
//
// Up is idempotent and safe when several instances start at once: each
// migration is applied in its own transaction, which takes a
// transaction-scoped advisory lock (so it works through PgBouncer in
// transaction mode) and records the version in herald_schema_migrations. A host that runs
// its own migration tool can use the plain SQL in FS instead.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// FS holds the migration files.
//
//go:embed *.sql
var FS embed.FS

// lockID is the advisory lock that serialises concurrent Up and Down calls
// (a fixed number: the bytes of "herald" read as an integer).
const lockID int64 = 0x686572616c64

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	Up      string
	Down    string
}

// All returns the embedded migrations in version order.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(FS, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		name := e.Name()
		base, direction, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), ".")
		if !ok || (direction != "up" && direction != "down") {
			return nil, fmt.Errorf("migration file %q: name is not NNNN_name.up.sql or .down.sql", name)
		}
		num, title, _ := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration file %q: version: %w", name, err)
		}
		body, err := fs.ReadFile(FS, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %q: %w", name, err)
		}
		m := byVersion[version]
		if m == nil {
			m = &Migration{Version: version, Name: title}
			byVersion[version] = m
		}
		if direction == "up" {
			m.Up = string(body)
		} else {
			m.Down = string(body)
		}
	}
	all := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		if m.Up == "" || m.Down == "" {
			return nil, fmt.Errorf("migration %04d: needs both an up and a down file", m.Version)
		}
		all = append(all, *m)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Version < all[j].Version })
	return all, nil
}

// Up applies every migration not yet applied and returns the versions it
// applied (none when the schema is current).
func Up(ctx context.Context, pool *pgxpool.Pool) ([]int, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	var applied []int
	for {
		var version int
		err := step(ctx, pool, func(tx pgx.Tx, done map[int]bool) error {
			for _, m := range all {
				if done[m.Version] {
					continue
				}
				if err := run(ctx, tx, m.Up,
					`INSERT INTO herald_schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
					return fmt.Errorf("apply migration %04d_%s: %w", m.Version, m.Name, err)
				}
				version = m.Version
				return nil
			}
			return nil
		})
		if err != nil || version == 0 {
			return applied, err
		}
		applied = append(applied, version)
	}
}

// Down reverts the last steps applied migrations, newest first, and returns
// the versions it reverted.
func Down(ctx context.Context, pool *pgxpool.Pool, steps int) ([]int, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	var reverted []int
	for len(reverted) < steps {
		var version int
		err := step(ctx, pool, func(tx pgx.Tx, done map[int]bool) error {
			for i := len(all) - 1; i >= 0; i-- {
				m := all[i]
				if !done[m.Version] {
					continue
				}
				if err := run(ctx, tx, m.Down,
					`DELETE FROM herald_schema_migrations WHERE version = $1`, m.Version); err != nil {
					return fmt.Errorf("revert migration %04d_%s: %w", m.Version, m.Name, err)
				}
				version = m.Version
				return nil
			}
			return nil
		})
		if err != nil || version == 0 {
			return reverted, err
		}
		reverted = append(reverted, version)
	}
	return reverted, nil
}

// step runs fn in one transaction that holds the migration lock, a
// transaction-scoped advisory lock: it ends with the transaction, so it
// works as well through a transaction pooler (PgBouncer's pool_mode =
// transaction), which hands each transaction to any server session and
// would strand a session-level lock on one of them. fn gets the versions
// applied so far, read under the lock, and applies or reverts at most one
// migration: each is its own transaction.
func step(ctx context.Context, pool *pgxpool.Pool, fn func(pgx.Tx, map[int]bool) error) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lockID); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS herald_schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create herald_schema_migrations: %w", err)
		}
		done, err := appliedVersions(ctx, tx)
		if err != nil {
			return err
		}
		return fn(tx, done)
	})
}

func appliedVersions(ctx context.Context, tx pgx.Tx) (map[int]bool, error) {
	rows, err := tx.Query(ctx, `SELECT version FROM herald_schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	done := make(map[int]bool, len(versions))
	for _, v := range versions {
		done[v] = true
	}
	return done, nil
}

// run executes a migration's SQL and its bookkeeping statement in tx.
func run(ctx context.Context, tx pgx.Tx, sql, record string, args ...any) error {
	if _, err := tx.Exec(ctx, sql); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, record, args...)
	return err
}
