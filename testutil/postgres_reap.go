package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
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

// writeOwner records this process as the owner of the cluster in dir.
func writeOwner(dir string) error {
	pid := os.Getpid()
	content := fmt.Sprintf("%d %s\n", pid, processStartTime(pid))
	if err := os.WriteFile(filepath.Join(dir, ownerFileName), []byte(content), 0o644); err != nil {
		return fmt.Errorf("write cluster owner: %w", err)
	}
	return nil
}

// ownerAlive reports whether the process that wrote dir's owner file still runs, and whether
// there was an owner file at all.
func ownerAlive(dir string) (alive, found bool) {
	content, err := os.ReadFile(filepath.Join(dir, ownerFileName))
	if err != nil {
		return false, false
	}
	pidText, startTime, _ := strings.Cut(strings.TrimSpace(string(content)), " ")
	pid, err := strconv.Atoi(pidText)
	if err != nil || !processAlive(pid) {
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

// reapStaleClusters removes the clusters in root whose owner has died: it stops their server
// (pg_ctl stop -m immediate) if it still runs, then deletes the directory. It is best effort:
// a cluster it cannot remove is left for the next attempt.
func reapStaleClusters(ctx context.Context, root, binDir string, u *serverUser) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), clusterDirPrefix) {
			continue
		}
		dir := filepath.Join(root, e.Name())
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
		_ = reapCluster(ctx, dir, binDir, u)
	}
}

// reapCluster stops the server of the cluster in dir, if one runs, and deletes dir.
func reapCluster(ctx context.Context, dir, binDir string, u *serverUser) error {
	dataDir := filepath.Join(dir, "data")
	var stopErr error
	if _, err := os.Stat(filepath.Join(dataDir, "postmaster.pid")); err == nil {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		stop := exec.CommandContext(ctx, filepath.Join(binDir, "pg_ctl"), "stop",
			"-D", dataDir, "-m", "immediate", "-w", "-t", "20")
		stop.Dir = dir
		u.apply(stop)
		if out, err := stop.CombinedOutput(); err != nil && !strings.Contains(string(out), "Is server running?") {
			// The directory goes anyway: a postmaster whose lock file disappears shuts
			// itself down within a minute or so.
			stopErr = fmt.Errorf("stop stale cluster %s: %w: %s", dir, err, strings.TrimSpace(string(out)))
		}
	}
	return errors.Join(stopErr, os.RemoveAll(dir))
}
