// Package pgcluster starts and stops throwaway Postgres clusters from the
// machine's server binaries: initdb into a directory of its own, a server on
// 127.0.0.1, trust authentication, and removal of the files at Stop. Clusters
// that a killed process left behind are reaped by the next Start.
// StartBouncer puts a pgbouncer (transaction pooling by default) in front of
// a cluster, as the same unprivileged user.
//
// It serves `herald demo`, `herald bench` and `herald chaos` (which run
// without a database of their own) and testutil, whose StartCluster, Cluster
// and ClusterConfig are this package's Start, Cluster and Config. It imports
// no testing package, so the herald binary does not link one.
package pgcluster

// testDatabaseURLEnv is the variable testutil reads for an existing server
// instead of a cluster; errors name it as the way out.
const testDatabaseURLEnv = "HERALD_TEST_DATABASE_URL"
