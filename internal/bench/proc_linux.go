//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// benchClockTicks is USER_HZ, the unit of CPU times in /proc/<pid>/stat: 100 on
// every Linux architecture Go supports.
const benchClockTicks = 100

// benchResetPeakRSS makes the kernel forget this process's peak resident set
// size (VmHWM), so that the next benchPeakRSS is the peak since now.
func benchResetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// benchPeakRSS returns this process's peak resident set size in bytes (VmHWM).
func benchPeakRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

// benchSelfRSS returns this process's resident anonymous memory (heap,
// stacks, runtime) and resident file-backed memory (mostly the binary's
// pages), in bytes, from /proc/self/status.
func benchSelfRSS() (anon, file int64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		for key, dst := range map[string]*int64{"RssAnon:": &anon, "RssFile:": &file} {
			if rest, ok := strings.CutPrefix(line, key); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				*dst = kb * 1024
			}
		}
	}
	return anon, file
}

// benchProcessCPU returns the CPU time (user and system) this process has used.
func benchProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchPostgresCPU returns the CPU time used by the Postgres server whose data
// directory is dataDir: the postmaster, its exited children (reaped into
// its cutime/cstime) and its live children. It returns 0 if it cannot tell.
func benchPostgresCPU(dataDir string) time.Duration {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	postmaster, err := strconv.Atoi(strings.TrimSpace(string(line)))
	if err != nil {
		return 0
	}
	_, own, ok := benchProcStat(postmaster, true)
	if !ok {
		return 0
	}
	ticks := own
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == postmaster {
			continue
		}
		if ppid, t, ok := benchProcStat(pid, false); ok && ppid == postmaster {
			ticks += t
		}
	}
	return time.Duration(ticks) * time.Second / benchClockTicks
}

// benchProcStat reads a process's parent and CPU ticks (utime+stime, plus its
// reaped children's when withChildren).
func benchProcStat(pid int, withChildren bool) (ppid int, ticks int64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state); utime is field 14.
	if len(fields) < 15 {
		return 0, 0, false
	}
	num := func(field int) int64 {
		n, _ := strconv.ParseInt(fields[field-3], 10, 64)
		return n
	}
	ticks = num(14) + num(15)
	if withChildren {
		ticks += num(16) + num(17)
	}
	return int(num(4)), ticks, true
}

// benchLoadAverage returns the one-minute load average, or 0.
func benchLoadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, _ := strconv.ParseFloat(f, 64)
	return v
}

// benchChildCPU is a live process's CPU time so far (0 if unknown).
func benchChildCPU(pid int) time.Duration {
	_, ticks, ok := benchProcStat(pid, false)
	if !ok {
		return 0
	}
	return time.Duration(ticks) * time.Second / benchClockTicks
}
