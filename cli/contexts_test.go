package cli

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestAllowUserContexts: apply refuses a process that switches user-level
// contexts and says how to go on; --allow-user-contexts applies; revert
// says the patch's code stays mapped.
func TestAllowUserContexts(t *testing.T) {
	dir, key, pub := keygen(t)
	orig, fixed, err := fixture.CompilePair("coro_revert", filepath.Join(fixture.Root(), "testdata", "fixtures", "coro_revert"), "coro.c")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "coro.hpatch")
	if code, _, stderr := run(t, "build", "--original", orig, "--patched", fixed, "--key", key, "-o", file, "--id", "coro-fix"); code != 0 {
		t.Fatalf("build: %s", stderr)
	}
	proc := fixture.Start(t, orig)
	if got, err := proc.Probe("step"); err != nil || got != "step v1 0" {
		t.Fatalf("first step: %q, %v", got, err)
	}
	pid := strconv.Itoa(proc.Pid())
	code, stdout, stderr := run(t, "apply", "--pid", pid, "--trust", pub, file)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "switches user-level contexts") || !strings.Contains(stderr, "--allow-user-contexts") {
		t.Errorf("apply: exit %d, %q %q; want a refusal naming --allow-user-contexts", code, stdout, stderr)
	}
	if code, _, stderr := run(t, "apply", "--pid", pid, "--trust", pub, "--allow-user-contexts", file); code != 0 {
		t.Fatalf("apply --allow-user-contexts: exit %d: %s", code, stderr)
	}
	if got, err := proc.Probe("step"); err != nil || got != "step v2 1" {
		t.Errorf("after the apply: %q, %v", got, err)
	}
	code, stdout, stderr = run(t, "revert", "--pid", pid, "coro-fix")
	if code != 0 || !strings.Contains(stdout, "stays mapped") {
		t.Errorf("revert: exit %d, %q %q", code, stdout, stderr)
	}
	if got, err := proc.Probe("step"); err != nil || got != "step v1 2" {
		t.Errorf("after the revert: %q, %v", got, err)
	}
}
