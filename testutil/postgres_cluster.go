package testutil

import (
	"context"

	"github.com/herald-push/herald/internal/pgcluster"
)

// ClusterConfig configures StartCluster. The zero value is valid and means the documented
// defaults (see its fields).
type ClusterConfig = pgcluster.Config

// Cluster is a throwaway Postgres cluster for tests: its own data directory under
// ClusterConfig.Dir, a server listening on 127.0.0.1 on its own port, trust authentication for
// the superuser postgres, UTF8 and locale C, and the server log in a file in the data
// directory (see LogPath). A Cluster's methods are safe for concurrent use.
type Cluster = pgcluster.Cluster

// StartCluster creates a Postgres cluster with initdb and starts its server. It returns once
// the server accepts connections. The caller must call Stop, which also deletes the cluster's
// files; in tests, register it with t.Cleanup. Most tests want NewDatabase instead, which
// shares one cluster across the test binary.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	return pgcluster.Start(ctx, cfg)
}
