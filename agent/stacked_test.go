package agent

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestAgentCrashStacked: a good fix (a-safe) and then a bad patch stacked
// on it (b-crashy) in two processes; one crashes, in b-crashy's code, or
// where the kernel reports no fault. The crash is charged to b-crashy
// alone (the patch whose code it was in; the most recent apply when that
// is not known): it is rolled back, while a-safe is neither reported nor
// rolled back and stays in force in the other process. (The agent used
// to charge both, and the fleet then reverted the good fix everywhere.)
func TestAgentCrashStacked(t *testing.T) {
	orig, bad := crashy(t)
	safe, err := fixture.Compile("crashy-safe", []string{"testdata/crashy/safe/crashy.c"}, fixture.PatchFlags...)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		crash func(p *fixture.Proc, pid int)
	}{
		// A dies of SIGSEGV in b-crashy's handle.
		{"in the patch's code", func(p *fixture.Proc, _ int) { p.Probe("boom") }},
		// A dies of a SIGSEGV the kernel reports no fault for (sent by
		// kill): charged to the most recent apply, b-crashy.
		{"no fault address", func(_ *fixture.Proc, pid int) { syscall.Kill(pid, syscall.SIGSEGV) }},
	} {
		t.Run(tc.name, func(t *testing.T) { crashStacked(t, orig, safe, bad, tc.crash) })
	}
}

func crashStacked(t *testing.T, orig, safe, bad string, crash func(p *fixture.Proc, pid int)) {
	h := newHost(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	_, good := signed(t, orig, safe, "a-safe", key)
	_, crashing := signed(t, orig, bad, "b-crashy", key)
	cfg := agentConfig(dir, h, pub)
	if err := os.WriteFile(filepath.Join(cfg.PatchDir, "a-safe.hpatch"), good, 0o644); err != nil {
		t.Fatal(err)
	}
	a, pidA := h.start(t, orig)
	b, pidB := h.start(t, orig)
	startAgent(t, cfg)
	appliedOf := func(id string, pid int) func(Event) bool {
		return func(e Event) bool { return e.Type == "applied" && e.PID == pid && e.Patch == id }
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "a-safe applied", appliedOf("a-safe", pidA))
	waitEvent(t, cfg.StateDir, 30*time.Second, "a-safe applied", appliedOf("a-safe", pidB))
	if err := os.WriteFile(filepath.Join(cfg.PatchDir, "b-crashy.hpatch"), crashing, 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "b-crashy applied", appliedOf("b-crashy", pidA))
	waitEvent(t, cfg.StateDir, 30*time.Second, "b-crashy applied", appliedOf("b-crashy", pidB))
	if got, _ := b.Probe("hello"); got != "fixed hello" {
		t.Fatalf("B answered %q with both patches", got)
	}

	crash(a, pidA)
	ev := waitEvent(t, cfg.StateDir, 30*time.Second, "crash", is("crash", pidA))
	t.Logf("crash event: %s", ev)
	if ev.Patch != "b-crashy" {
		t.Errorf("the crash was charged to %q, want b-crashy", ev.Patch)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "b-crashy reverted from B", func(e Event) bool {
		return e.Type == "reverted" && e.PID == pidB && e.Patch == "b-crashy"
	})
	if got, _ := b.Probe("hello"); got != "safe hello" {
		t.Errorf("B answered %q after the rollback; want the good fix's answer", got)
	}
	if ids := applied(t, pidB); !slices.Equal(ids, []string{"a-safe:applied"}) {
		t.Errorf("B carries %v, want a-safe only", ids)
	}
	for _, typ := range []string{"crash", "rolled_back"} {
		if e, ok := findEvent(cfg.StateDir, func(e Event) bool { return e.Type == typ && e.Patch == "a-safe" }); ok {
			t.Errorf("the good fix was charged: %s", e)
		}
	}
}
