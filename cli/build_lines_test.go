package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestBuildLeftOut: build says which functions it left out because only
// their line numbers or build stamps changed, and --include-line-changes
// carries them.
func TestBuildLeftOut(t *testing.T) {
	fx, err := fixture.Load("line_number")
	if err != nil {
		t.Fatal(err)
	}
	orig, fixed := fixtureBuilds(t, fx)
	dir, key, _ := keygen(t)
	out := filepath.Join(dir, "lines.hpatch")
	code, stdout, stderr := run(t, "build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", out)
	if code != 0 {
		t.Fatalf("build: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "1 function(s) replaced") || !strings.Contains(stdout, "left out main.c:get_slot: only line numbers") {
		t.Errorf("build output does not list what it left out:\n%s", stdout)
	}
	code, stdout, stderr = run(t, "build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", out, "--include-line-changes")
	if code != 0 {
		t.Fatalf("build --include-line-changes: exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout, "left out main.c:get_slot") || strings.Contains(stdout, " 1 function(s) replaced") {
		t.Errorf("--include-line-changes left functions out:\n%s", stdout)
	}
}
