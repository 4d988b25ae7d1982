//go:build unix && !linux

package pgcluster

import "os/exec"

// startServerProcess starts the postmaster. Only Linux can tie its life to this process; here
// a server left by a killed test binary is removed by the next Start.
func startServerProcess(cmd *exec.Cmd) error { return cmd.Start() }

// processStartTime is unknown outside Linux.
func processStartTime(int) string { return "" }

// isPostmasterOf cannot tell outside Linux: it says no, and the server is left to notice that
// its data directory is gone.
func isPostmasterOf(int, string) bool { return false }

// setBouncerDeathSignal does nothing outside Linux: a pgbouncer left by a
// killed test binary stays until its cluster's server is gone.
func setBouncerDeathSignal(*exec.Cmd) {}
