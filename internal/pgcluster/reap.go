package pgcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ownerFileName is the file in each cluster directory naming the process that owns the
// cluster: "<pid> <start time>\n", the start time empty where unknown.
const ownerFileName = "owner"

// unownedGrace is how long a cluster directory without an owner file is left alone: its
// creator may be between making the directory and writing the file.
const unownedGrace = time.Minute

// writeOwner records this process as the owner of the cluster in dir. The
// file appears whole or not at all (written aside, then renamed): a reaper in
// another test binary reading it half written took a live cluster for a dead
// one and deleted it under its tests.
func writeOwner(dir string) error {
	pid := os.Getpid()
	content := fmt.Sprintf("%d %s\n", pid, processStartTime(pid))
	aside := filepath.Join(dir, ownerFileName+".new")
	if err := os.WriteFile(aside, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write cluster owner: %w", err)
	}
	if err := os.Rename(aside, filepath.Join(dir, ownerFileName)); err != nil {
		return fmt.Errorf("write cluster owner: %w", err)
	}
	return nil
}

// ownerAlive reports whether the process that wrote dir's owner file still runs, and whether
// there was an owner file at all. A file that names no process (empty, or
// cut short) counts as none: the directory's age decides, as for a cluster
// whose creator has not written it yet.
func ownerAlive(dir string) (alive, found bool) {
	content, err := os.ReadFile(filepath.Join(dir, ownerFileName))
	if err != nil {
		return false, false
	}
	pidText, startTime, _ := strings.Cut(strings.TrimSpace(string(content)), " ")
	pid, err := strconv.Atoi(pidText)
	if err != nil {
		return false, false
	}
	if !processAlive(pid) {
		return false, true
	}
	// A live process with the owner's pid but another start time reuses a dead owner's pid.
	if startTime != "" {
		if now := processStartTime(pid); now != "" && now != startTime {
			return false, true
		}
	}
	return true, true
}

// reapingPrefix marks a cluster directory claimed for removal.
const reapingPrefix = "reaping-"

// reapStaleClusters removes the clusters in root whose owner has died. It claims each by
// renaming it (so that concurrent reapers do not collide), shuts its server down if one still
// runs, and deletes it in the background: a large leftover cluster must not hold up the new
// one. It is best effort: what it cannot remove now, a later call will.
func reapStaleClusters(root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		switch {
		case !e.IsDir():
			continue
		case strings.HasPrefix(e.Name(), reapingPrefix):
			// A reaper died while deleting it, or is still at it: deleting twice is harmless.
			go os.RemoveAll(dir)
			continue
		case !strings.HasPrefix(e.Name(), clusterDirPrefix):
			continue
		}
		alive, found := ownerAlive(dir)
		if alive {
			continue
		}
		if !found {
			info, err := e.Info()
			if err != nil || time.Since(info.ModTime()) < unownedGrace {
				continue
			}
		}
		claimed := filepath.Join(root, reapingPrefix+e.Name())
		if err := os.Rename(dir, claimed); err != nil {
			continue // another reaper was faster
		}
		stopStaleServer(filepath.Join(dir, "data"), filepath.Join(claimed, "data"))
		go os.RemoveAll(claimed)
	}
}

// stopStaleServer shuts down, immediately, the server started on dataDir (now at claimedDir)
// if it still runs, and waits up to 10s for it to exit. That is pg_ctl stop -m immediate, with
// one more check: pg_ctl signals whatever process has the pid in postmaster.pid, and a dead
// server's pid may since have been given to another process (another test binary's server,
// say). Where that check is impossible (outside Linux) the server is left alone: a postmaster
// whose data directory lock file disappears shuts itself down within a minute.
func stopStaleServer(dataDir, claimedDir string) {
	content, err := os.ReadFile(filepath.Join(claimedDir, "postmaster.pid"))
	if err != nil {
		return
	}
	pidText, _, _ := strings.Cut(string(content), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(pidText))
	if err != nil || !isPostmasterOf(pid, dataDir) {
		return
	}
	p, err := os.FindProcess(pid)
	if err != nil || signalServer(p, true) != nil {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && processAlive(pid); {
		time.Sleep(20 * time.Millisecond)
	}
}
