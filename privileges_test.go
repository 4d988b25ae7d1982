package herald_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/migrations"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// TestRunsWithoutSuperuser proves the privileges the README lists: a
// migration role that owns one schema, and a runtime role with only
// SELECT, INSERT, UPDATE and DELETE on Herald's tables and USAGE on its
// sequences.
func TestRunsWithoutSuperuser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	adminURL := testutil.NewDatabase(t)
	admin, err := pgx.Connect(ctx, adminURL)
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close(context.Background()) })

	suffix := fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000_000)
	migrator, runtime, schema := "herald_migrator_"+suffix, "herald_runtime_"+suffix, "herald_app_"+suffix
	for _, stmt := range []string{
		fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'pw'`, migrator),
		fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD 'pw'`, runtime),
		fmt.Sprintf(`CREATE SCHEMA %s AUTHORIZATION %s`, schema, migrator),
	} {
		_, err := admin.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = admin.Exec(ctx, fmt.Sprintf(`DROP SCHEMA %s CASCADE`, schema))
		_, _ = admin.Exec(ctx, fmt.Sprintf(`DROP OWNED BY %s, %s`, migrator, runtime))
		_, _ = admin.Exec(ctx, fmt.Sprintf(`DROP ROLE %s, %s`, migrator, runtime))
	})

	asRole := func(role string) *pgxpool.Pool {
		u, err := url.Parse(adminURL)
		require.NoError(t, err)
		u.User = url.UserPassword(role, "pw")
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		pool, err := pgxpool.New(ctx, u.String())
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		return pool
	}

	// Migrations need only ownership of the schema they create tables in.
	_, err = migrations.Up(ctx, asRole(migrator))
	require.NoError(t, err)
	for _, grant := range []string{
		fmt.Sprintf(`GRANT USAGE ON SCHEMA %s TO %s`, schema, runtime),
		fmt.Sprintf(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO %s`, schema, runtime),
		fmt.Sprintf(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %s TO %s`, schema, runtime),
	} {
		_, err := asRole(migrator).Exec(ctx, grant)
		require.NoError(t, err, grant)
	}

	// The runtime role raises, relays, sends and records.
	pool := asRole(runtime)
	fake := testutil.NewFakeFCM(t, testutil.FakeFCMConfig{})
	client, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
	require.NoError(t, err)
	rules := notification.NewRules()
	require.NoError(t, notification.On(rules, notification.NotifyCourseAuthor))
	hd, err := herald.New(pool, client, rules, fastConfig())
	require.NoError(t, err)
	h := &harness{t: t, pool: pool, fake: fake, herald: hd}
	h.registerTokens("author", 2)
	h.fake.FailToken("author-device-0001", testutil.Fault{Code: testutil.FaultUnregistered})
	h.run()

	var n *notification.Notification
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		ns, err := hd.Raise(ctx, tx, comment("m1", "ann", "author"))
		if err == nil {
			n = ns[0]
		}
		return err
	}))
	h.waitStatuses(n, map[notification.DeliveryStatus]int{notification.StatusSent: 1, notification.StatusTokenPruned: 1}, 10*time.Second)
}
