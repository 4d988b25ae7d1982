package pgcluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// startServerProcess starts the postmaster so that the kernel sends it SIGQUIT (Postgres'
// immediate shutdown) when this process dies, however it dies: a test binary killed by
// `go test -timeout` or SIGKILL does not leave its server running.
//
// The parent-death signal fires when the parent *thread* exits, not the process, so the fork
// happens on a goroutine locked to a thread that never exits.
func startServerProcess(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.requests = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread must live as long as the process
			for req := range spawner.requests {
				req.done <- req.cmd.Start()
			}
		}()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if cmd.SysProcAttr.Pdeathsig == 0 {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	}
	done := make(chan error, 1)
	spawner.requests <- spawnRequest{cmd: cmd, done: done}
	return <-done
}

// setBouncerDeathSignal makes pgbouncer, started by startServerProcess, shut
// down at once (SIGTERM) when this process dies.
func setBouncerDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
}

var spawner struct {
	once     sync.Once
	requests chan spawnRequest
}

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan<- error
}

// processStartTime returns when pid started (in clock ticks since boot), so that a recycled
// pid is not mistaken for the process that owned a cluster; "" when unknown.
func processStartTime(pid int) string {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) may contain spaces and parentheses: fields after the last
	// ')' start at field 3, and the start time is field 22.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}

// isPostmasterOf reports whether pid is a postgres server started (by Start) on dataDir.
func isPostmasterOf(pid int, dataDir string) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return len(args) == 3 && filepath.Base(args[0]) == "postgres" && args[1] == "-D" && args[2] == dataDir
}
