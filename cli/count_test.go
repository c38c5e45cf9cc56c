package cli

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// TestFunctionCount: build, inspect, apply, status and revert count the
// functions of one patch the same way: functions replaced by a redirect
// at their entry. The cold_split fixture's patch replaces parse_request
// and carries its cold part, which is entered only from it.
func TestFunctionCount(t *testing.T) {
	dir, key, pub := keygen(t)
	fx, err := fixture.Load("cold_split")
	if err != nil {
		t.Fatal(err)
	}
	orig, fixed := fixtureBuilds(t, fx)
	file := filepath.Join(dir, "cold.hpatch")
	code, stdout, stderr := run(t, "build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", file, "--id", "cold-fix")
	if code != 0 {
		t.Fatalf("build: %s", stderr)
	}
	if !strings.Contains(stdout, "1 function(s) replaced, 0 new, 1 cold part(s)") {
		t.Errorf("build says %q; want 1 function replaced and 1 cold part", stdout)
	}
	code, stdout, _ = run(t, "inspect", "--json", file)
	var s patch.Summary
	if code != 0 || json.Unmarshal([]byte(stdout), &s) != nil {
		t.Fatalf("inspect: %s", stdout)
	}
	replaced := 0
	for _, f := range s.Functions {
		if f.Kind == patch.FuncKindReplaced {
			replaced++
		}
	}
	if replaced != 1 {
		t.Errorf("inspect lists %d replaced functions, want 1", replaced)
	}

	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(proc.Pid())
	var rep runReport
	code, stdout, stderr = run(t, "apply", "--pid", pid, "--trust", pub, "--json", file)
	if code != 0 || json.Unmarshal([]byte(stdout), &rep) != nil || len(rep.Processes) != 1 || rep.Processes[0].Functions != 1 {
		t.Errorf("apply --json: exit %d %s %s; want functions 1", code, stdout, stderr)
	}
	var st []procStatus
	code, stdout, _ = run(t, "status", "--pid", pid, "--json")
	if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil || len(st) != 1 || len(st[0].Patches) != 1 || st[0].Patches[0].Replaced != 1 {
		t.Errorf("status --json: %s; want replaced 1", stdout)
	}
	if _, stdout, _ := run(t, "status", "--pid", pid); !strings.Contains(stdout, "1 function(s) replaced") {
		t.Errorf("status: %q", stdout)
	}
	code, stdout, _ = run(t, "revert", "--pid", pid, "--json", "cold-fix")
	if code != 0 || json.Unmarshal([]byte(stdout), &rep) != nil || len(rep.Processes) != 1 || rep.Processes[0].Functions != 1 {
		t.Errorf("revert --json: %s; want functions 1", stdout)
	}
}
