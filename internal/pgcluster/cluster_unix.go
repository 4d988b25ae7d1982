//go:build unix

package pgcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// errNoCluster is why Start cannot work on this system: nil on Unix.
var errNoCluster error

// serverUser is the unprivileged account Postgres runs as when the test binary runs as root
// (Postgres refuses to run as root). It is nil when the binary runs as anyone else.
type serverUser struct {
	name     string
	uid, gid uint32
}

// lookupServerUser returns nil unless we are root; as root it returns the postgres system
// user if there is one, else nobody.
func lookupServerUser() (*serverUser, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, uidErr := strconv.ParseUint(u.Uid, 10, 32)
		gid, gidErr := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(uidErr, gidErr); err != nil {
			errs = append(errs, fmt.Errorf("user %s: %w", name, err))
			continue
		}
		return &serverUser{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root and no unprivileged user to run postgres as: %w", errors.Join(errs...))
}

// apply makes cmd run as u.
func (u *serverUser) apply(cmd *exec.Cmd) {
	if u == nil {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid}
}

// chown gives path to u.
func (u *serverUser) chown(path string) error {
	if u == nil {
		return nil
	}
	return os.Chown(path, int(u.uid), int(u.gid))
}

// checkTraversable reports an error naming the first directory from dir up to the root that u
// cannot enter: Postgres, running as u, could not reach its data directory.
func (u *serverUser) checkTraversable(dir string) error {
	if u == nil {
		return nil
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for {
		info, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			mode := info.Mode().Perm()
			canEnter := mode&0o001 != 0 ||
				(st.Uid == u.uid && mode&0o100 != 0) ||
				(st.Gid == u.gid && mode&0o010 != 0)
			if !canEnter {
				return fmt.Errorf("postgres runs as user %s, which cannot enter %s (mode %v): "+
					"choose a directory every user can traverse (for example set TMPDIR=/tmp)", u.name, dir, mode)
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// signalServer asks a postmaster to shut down: SIGQUIT is Postgres' immediate shutdown
// (backends die at once, crash recovery at next start), SIGINT its fast shutdown (sessions are
// terminated, then a checkpoint).
func signalServer(p *os.Process, immediate bool) error {
	if immediate {
		return p.Signal(syscall.SIGQUIT)
	}
	return p.Signal(syscall.SIGINT)
}

// terminate asks pgbouncer for its immediate shutdown (SIGTERM).
func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }
