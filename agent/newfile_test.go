package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgentNewFileAtOnce: a patch file written into the patch directory
// reaches the running processes without waiting for a rescan (set to an
// hour here); bench/agent measures how soon.
func TestAgentNewFileAtOnce(t *testing.T) {
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	_, data := signed(t, orig, fixed, "bounds-fix", key)
	cfg := agentConfig(dir, h, pub)
	cfg.Rescan = Duration(time.Hour)
	cfg.MetricsListen = freeLoopbackAddr(t)
	p, pid := h.start(t, orig)
	startAgent(t, cfg)
	// The first rescan is over once it has counted the processes.
	waitFor(t, 30*time.Second, func() bool {
		m := metricsText(cfg.MetricsListen)
		return strings.Contains(m, "hotpatchd_processes ") && !strings.Contains(m, "hotpatchd_processes 0\n")
	}, "the first rescan")
	if err := os.WriteFile(filepath.Join(cfg.PatchDir, "bounds.hpatch"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied without a rescan", is("applied", pid))
	if !answersFixed(t, p) {
		t.Errorf("the process does not answer as fixed")
	}
}
