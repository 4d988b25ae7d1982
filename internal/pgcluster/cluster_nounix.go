//go:build !unix

package pgcluster

import (
	"errors"
	"os"
	"os/exec"
)

// serverUser is unused outside Unix: Postgres runs as the current user.
type serverUser struct{ name string }

func lookupServerUser() (*serverUser, error)        { return nil, nil }
func (u *serverUser) apply(*exec.Cmd)               {}
func (u *serverUser) chown(string) error            { return nil }
func (u *serverUser) checkTraversable(string) error { return nil }

// errNoCluster is why Start cannot work here. Tests on such systems can still use
// testutil.NewDatabase with HERALD_TEST_DATABASE_URL.
var errNoCluster = errors.New("starting a postgres cluster needs a unix system; set " + testDatabaseURLEnv + " instead")

func startServerProcess(cmd *exec.Cmd) error { return cmd.Start() }

func processAlive(pid int) bool {
	_, err := os.FindProcess(pid)
	return err == nil
}

func processStartTime(int) string { return "" }

func signalServer(p *os.Process, _ bool) error { return p.Kill() }

func isPostmasterOf(int, string) bool { return false }

func setBouncerDeathSignal(*exec.Cmd) {}

func terminate(p *os.Process) error { return p.Kill() }
