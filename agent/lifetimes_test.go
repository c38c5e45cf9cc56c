//go:build linux

package agent

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestWatchDirEnds: the patch directory's watcher reports a change, and
// its reader goroutine ends once the context is done (it used to stay
// blocked in read(2) on an inotify fd closed under it).
func TestWatchDirEnds(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{PatchDir: dir}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := a.watchDir(ctx)
	if err := os.WriteFile(filepath.Join(dir, "x.hpatch"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no change reported for a new file")
	}
	cancel()
	waitFor(t, 30*time.Second, func() bool { return !strings.Contains(stacks(), "(*Agent).watchDir.func") },
		"the watcher's goroutines to end")
}

// stacks returns the stacks of every goroutine.
func stacks() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// TestAgentProbeTimeout: a probe command whose grandchild holds its output
// pipe (sh -c 'sleep 100 & sleep 100') times out at its timeout, not when
// the grandchild ends: the agent kills the probe's process group and stops
// waiting for the pipe.
func TestAgentProbeTimeout(t *testing.T) {
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	cfg, _ := withPatch(t, h, orig, fixed, "bounds-fix")
	cfg.Health.Probes = []Probe{{Command: "sleep 100 & sleep 100", Interval: Duration(100 * time.Millisecond), Timeout: Duration(500 * time.Millisecond)}}
	_, pid := h.start(t, orig)
	startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pid))
	e := waitEvent(t, cfg.StateDir, 30*time.Second, "probe_failed", is("probe_failed", pid))
	if !strings.Contains(e.Error, "deadline exceeded") {
		t.Errorf("probe_failed says %q; want the timeout", e.Error)
	}
}
