// Package testutil is what a developer embedding Herald needs in their own tests: a Postgres,
// a fake FCM, and ways to assert on what was sent.
//
// # Postgres
//
// NewPool and NewDatabase give each test its own database with Herald's schema applied,
// dropped when the test ends. The databases live on a throwaway cluster that the test binary
// starts on first use (initdb, a free port on 127.0.0.1, durability off for speed) and that Main
// stops, or on the server named by HERALD_TEST_DATABASE_URL when it is set. Migrations run once
// per schema into a template database; each test database is a copy of it. A package using
// them needs the PostgreSQL server binaries (initdb and postgres) in PATH or in
// /usr/lib/postgresql/*/bin, or HERALD_TEST_DATABASE_URL, and this TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testutil.Main(m)) }
//
// Tests that crash or restart Postgres start their own server with StartCluster, or restart
// the shared one (SharedCluster) when they run alone. When the tests run as root, Postgres
// runs as the postgres system user (or nobody), since it refuses to run as root.
//
// # PgBouncer
//
// NewPoolerPool and PoolerURL go through a real pgbouncer in transaction pooling mode, started
// in front of the throwaway cluster on first use when the machine has one (/usr/sbin/pgbouncer
// or in PATH; the tests that use them skip, saying why, where it has not), with pgx in
// PoolerExecMode. HERALD_TEST_POOLER=pgbouncer (PoolerEnv) sends every NewPool through it, so a
// whole suite runs as a host behind PgBouncer would.
//
// # FCM
//
// NewFakeFCM (StartFakeFCM outside tests) serves the FCM HTTP v1 send API on a loopback TLS
// listener, so Herald's sender talks to it through the real Firebase SDK. It fails chosen
// tokens or every request with the errors real FCM returns (FailToken, FailAll), can add latency,
// and records what it accepted (Accepted, AcceptedFor) for assertions. ClientOptions points
// herald.NewFCM at it; MessagingClient gives a raw SDK client, without Herald.
//
// Everything here is safe for concurrent use, from parallel tests.
package testutil
