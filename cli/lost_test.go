package cli

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestLostStatusApply: a patched library loaded again by its program
// (testdata/fixtures/dlreload) loses the patch: status --json says "lost",
// apply cleans up and applies again and says so, and the fix is back.
func TestLostStatusApply(t *testing.T) {
	dir, key, pub := keygen(t)
	file, orig := buildFixturePatch(t, "shared_lib", key, dir)
	host, err := fixture.Compile("dlreload", []string{filepath.Join(fixture.Root(), "testdata", "fixtures", "dlreload", "host.c")}, "-O2", "-ldl")
	if err != nil {
		t.Fatal(err)
	}
	proc := fixture.StartArgs(t, []string{host, orig.Lib})
	ask := func(line string) string {
		t.Helper()
		got, err := proc.Probe(line)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	ask("where")
	pid := strconv.Itoa(proc.Pid())
	if code, _, stderr := run(t, "apply", "--pid", pid, "--trust", pub, file); code != 0 {
		t.Fatalf("apply: %s", stderr)
	}
	if got := ask("listen 65616"); got != "invalid port" {
		t.Fatalf("patched: %q", got)
	}
	if got := ask("reload"); !strings.HasPrefix(got, "reloaded at") {
		t.Fatalf("reload: %q", got)
	}

	code, stdout, stderr := run(t, "status", "--pid", pid, "--json")
	var st []procStatus
	if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil || len(st) != 1 || len(st[0].Patches) != 1 || st[0].Patches[0].State != engine.StateLost {
		t.Errorf("status --json after the reload: exit %d, %s %s; want one patch in state lost", code, stdout, stderr)
	}
	if _, stdout, _ := run(t, "status", "--pid", pid); !strings.Contains(stdout, "lost") || strings.Contains(stdout, "applied since") {
		t.Errorf("status: %q; want it to say lost", stdout)
	}

	code, stdout, stderr = run(t, "apply", "--pid", pid, "--trust", pub, "--json", file)
	var rep runReport
	if code != 0 || json.Unmarshal([]byte(stdout), &rep) != nil || len(rep.Processes) != 1 || rep.Processes[0].Result != "applied" || !rep.Processes[0].WasLost {
		t.Errorf("apply of the lost patch: exit %d, %s %s", code, stdout, stderr)
	}
	if got := ask("listen 65616"); got != "invalid port" {
		t.Errorf("applied again: %q", got)
	}
	if _, stdout, _ := run(t, "status", "--pid", pid); !strings.Contains(stdout, "applied since") || !strings.Contains(stdout, "1 function(s) replaced") {
		t.Errorf("status after applying again: %q", stdout)
	}
	if got := ask("reload"); !strings.HasPrefix(got, "reloaded at") {
		t.Fatalf("reload: %q", got)
	}
	code, stdout, stderr = run(t, "revert", "--pid", pid, "shared_lib-fix")
	if code != 0 || !strings.Contains(stdout, "was lost") || !strings.Contains(stdout, "0 function(s) put back") {
		t.Errorf("revert of the lost patch: exit %d, %q %q", code, stdout, stderr)
	}
	if _, stdout, _ := run(t, "status", "--pid", pid); !strings.Contains(stdout, "no patches") {
		t.Errorf("status after the revert: %q", stdout)
	}
}
