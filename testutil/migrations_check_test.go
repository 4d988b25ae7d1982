package testutil_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald/migrations"
	"github.com/herald-push/herald/testutil"
)

func TestMigrationsCheck_ADatabaseMissingTheNewestMigrationIsBehindAndSaysToRunUp(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := t.Context()
	latest, err := migrations.Latest()
	require.NoError(t, err)
	all, err := migrations.All()
	require.NoError(t, err)
	previous := all[len(all)-2].Version // numbers may skip: each team has its own
	ahead, err := migrations.Check(ctx, pool)
	require.NoError(t, err, "a freshly migrated database is current")
	assert.False(t, ahead)

	_, err = migrations.Down(ctx, pool, 1)
	require.NoError(t, err)
	_, err = migrations.Check(ctx, pool)
	require.ErrorIs(t, err, migrations.ErrBehind)
	var behind *migrations.VersionError
	require.ErrorAs(t, err, &behind)
	assert.Equal(t, previous, behind.Have)
	assert.Equal(t, latest, behind.Want)
	assert.Equal(t, []int{latest}, behind.Missing)
	assert.Contains(t, err.Error(), "migrations.Up")

	_, err = migrations.Up(ctx, pool)
	require.NoError(t, err)
	_, err = migrations.Check(ctx, pool)
	require.NoError(t, err, "current again once Up ran")
}

func TestMigrationsCheck_ANeverMigratedDatabaseIsBehindNotARawMissingRelation(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := t.Context()
	all, err := migrations.All()
	require.NoError(t, err)
	_, err = migrations.Down(ctx, pool, len(all))
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `DROP TABLE herald_schema_migrations`)
	require.NoError(t, err)

	_, err = migrations.Check(ctx, pool)
	require.ErrorIs(t, err, migrations.ErrBehind)
	var behind *migrations.VersionError
	require.ErrorAs(t, err, &behind)
	assert.Zero(t, behind.Have)
	assert.Len(t, behind.Missing, len(all))
	assert.NotContains(t, err.Error(), "does not exist")

	var tableExists bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT to_regclass('herald_schema_migrations') IS NOT NULL`).Scan(&tableExists))
	assert.False(t, tableExists, "Check only reads: it creates nothing")
}

func TestMigrationsCheck_ADatabaseMigratedByANewerBinaryIsAcceptedAsAhead(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	ctx := t.Context()
	_, err := pool.Exec(ctx, `INSERT INTO herald_schema_migrations (version, name) VALUES (9999, 'from_the_future')`)
	require.NoError(t, err)
	ahead, err := migrations.Check(ctx, pool)
	require.NoError(t, err)
	assert.True(t, ahead)
}

func TestMigrationsCheck_AnUnreachableDatabaseIsNotReportedAsBehind(t *testing.T) {
	t.Parallel()
	pool := testutil.NewPool(t)
	pool.Close()
	_, err := migrations.Check(t.Context(), pool)
	require.Error(t, err)
	assert.False(t, errors.Is(err, migrations.ErrBehind))
}
