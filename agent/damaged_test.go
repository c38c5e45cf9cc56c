package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestAgentDamagedPatchFile: the file of an applied patch is damaged in
// place (a non-atomic copy caught half way, then a full disk that left it
// empty). The agent reports it and keeps the last good version in force:
// the patched process stays fixed, a new process is patched, also after a
// restart (from the copy kept in the state directory); removing the file
// still reverts the patch. It used to revert the fix from every process.
func TestAgentDamagedPatchFile(t *testing.T) {
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	cfg, _ := withPatch(t, h, orig, fixed, "bounds-fix")
	p1, pid1 := h.start(t, orig)
	ag := startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pid1))
	file := filepath.Join(cfg.PatchDir, "bounds-fix.hpatch")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(file, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	damaged := waitEvent(t, cfg.StateDir, 30*time.Second, "patch_damaged", is("patch_damaged", 0))
	if damaged.Patch != "bounds-fix" || damaged.File != file {
		t.Errorf("patch_damaged %+v: want patch bounds-fix, file %s", damaged, file)
	}
	_, pid2 := h.start(t, orig)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied to a new process", is("applied", pid2))
	if !answersFixed(t, p1) {
		t.Errorf("the patched process lost the fix when its file was damaged")
	}

	ag.kill9()
	if err := os.WriteFile(file, nil, 0o644); err != nil { // a full disk
		t.Fatal(err)
	}
	startAgent(t, cfg)
	waitFor(t, 30*time.Second, func() bool { return countEvents(cfg.StateDir, is("started", 0)) == 2 }, "a second start")
	_, pid3 := h.start(t, orig)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied after the restart", is("applied", pid3))
	if !answersFixed(t, p1) {
		t.Errorf("the patched process lost the fix at the restart")
	}
	if e, ok := findEvent(cfg.StateDir, func(e Event) bool { return e.Type == "patch_removed" || e.Type == "reverted" }); ok {
		t.Errorf("the fix was dropped: %s", e)
	}

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "reverted once the file is removed", is("reverted", pid1))
	if answersFixed(t, p1) {
		t.Errorf("the process still answers as fixed after the file was removed")
	}
}
