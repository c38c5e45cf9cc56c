package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
)

// TestAgentTornState: a state.json torn while the agent was down (and
// the patch file removed meanwhile) does not stop the agent: it rebuilds
// its state from the processes and the patches it kept, says so, and
// still reverts the patch whose file went away.
func TestAgentTornState(t *testing.T) {
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	cfg, _ := withPatch(t, h, orig, fixed, "bounds-fix")
	p, pid := h.start(t, orig)
	ag := startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pid))
	ag.kill9()

	path := filepath.Join(cfg.StateDir, stateFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(cfg.PatchDir, "bounds-fix.hpatch")); err != nil {
		t.Fatal(err)
	}
	startAgent(t, cfg)
	e := waitEvent(t, cfg.StateDir, 30*time.Second, "state_rebuilt", is("state_rebuilt", 0))
	if !strings.Contains(e.Message, "1 managed") || !strings.Contains(e.Message, "1 health watches") {
		t.Errorf("state_rebuilt says %q; want the managed patch and the watch of the patched process", e.Message)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "reverted (its file was removed while the agent was down)", is("reverted", pid))
	if answersFixed(t, p) {
		t.Errorf("the process still answers as fixed")
	}
}

// TestAgentKilledRecordsEveryApply kills the agent with SIGKILL the
// moment a process it patches carries the patch (between the engine's
// work and the record of it), a few times; every process ends up patched
// once and recorded by exactly one "applied" event.
func TestAgentKilledRecordsEveryApply(t *testing.T) {
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	cfg, _ := withPatch(t, h, orig, fixed, "bounds-fix")
	var pids []int
	for round := 0; round < 5; round++ {
		ag := startAgent(t, cfg)
		var burst []int
		for range 3 {
			_, pid := h.start(t, orig)
			burst = append(burst, pid)
		}
		pids = append(pids, burst...)
		waitFor(t, 30*time.Second, func() bool {
			for _, pid := range burst {
				if st, err := engine.Status(pid); err == nil && slices.ContainsFunc(st, func(s engine.Applied) bool { return s.State == "applied" }) {
					return true
				}
			}
			return false
		}, "a process of round %d patched", round)
		ag.kill9()
	}
	startAgent(t, cfg)
	for _, pid := range pids {
		waitFor(t, 30*time.Second, func() bool {
			ids := applied(t, pid)
			return len(ids) == 1 && ids[0] == "bounds-fix:applied" && countEvents(cfg.StateDir, is("applied", pid)) > 0
		}, "process %d patched once and recorded", pid)
	}
	for _, pid := range pids {
		if n := countEvents(cfg.StateDir, is("applied", pid)); n != 1 {
			t.Errorf("process %d: %d applied events, want 1", pid, n)
		}
	}
	t.Logf("%d applies recorded after a restart", countEvents(cfg.StateDir, func(e Event) bool {
		return e.Type == "applied" && strings.HasPrefix(e.Message, "recorded at the start")
	}))
}
