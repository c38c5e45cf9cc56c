package cli

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// buildFixturePatch runs "hotpatch build" for a fixture and returns the
// patch file and the original build.
func buildFixturePatch(t *testing.T, name, key, dir string) (string, *fixture.Build) {
	t.Helper()
	fx, err := fixture.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	orig, fixed := fixtureBuilds(t, fx)
	out := filepath.Join(dir, name+".hpatch")
	if code, _, stderr := run(t, "build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", out, "--id", name+"-fix"); code != 0 {
		t.Fatalf("build: %s", stderr)
	}
	return out, orig
}

// TestApplyRevertStatus drives apply, status and revert on a process the
// test started, with text and JSON output, as the command-line contract (docs/cli.md) says.
func TestApplyRevertStatus(t *testing.T) {
	dir, key, pub := keygen(t)
	file, orig := buildFixturePatch(t, "bounds_check", key, dir)
	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(proc.Pid())

	code, stdout, stderr := run(t, "apply", "--pid", pid, "--trust", pub, "--json", file)
	if code != 0 {
		t.Fatalf("apply: exit %d: %s", code, stderr)
	}
	var rep runReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("apply --json: %v\n%s", err, stdout)
	}
	if rep.Patch != "bounds_check-fix" || len(rep.Processes) != 1 || rep.Processes[0].Result != "applied" ||
		rep.Processes[0].PID != proc.Pid() || rep.Processes[0].Functions != 1 {
		t.Errorf("apply report %+v", rep)
	}
	if got, err := proc.Probe("set AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); err != nil || got != "1 rejected len=30 max=15" {
		t.Errorf("patched process answered %q, %v", got, err)
	}

	// Applying again changes nothing and says so.
	code, stdout, _ = run(t, "apply", "--pid", pid, "--trust", pub, file)
	if code != 0 || !strings.Contains(stdout, "skipped") || !strings.Contains(stdout, "already applied") {
		t.Errorf("second apply: exit %d, %q", code, stdout)
	}

	code, stdout, stderr = run(t, "status", "--pid", pid, "--json")
	if code != 0 {
		t.Fatalf("status: %s", stderr)
	}
	var st []procStatus
	if err := json.Unmarshal([]byte(stdout), &st); err != nil || len(st) != 1 || len(st[0].Patches) != 1 || st[0].Patches[0].ID != "bounds_check-fix" {
		t.Errorf("status --json = %s (%v)", stdout, err)
	}

	code, stdout, stderr = run(t, "revert", "--pid", pid, "bounds_check-fix")
	if code != 0 || !strings.Contains(stdout, "reverted bounds_check-fix") {
		t.Fatalf("revert: exit %d: %q %q", code, stdout, stderr)
	}
	if got, err := proc.Probe("set AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); err != nil || strings.Contains(got, "rejected") {
		t.Errorf("reverted process answered %q, %v; want the original behaviour", got, err)
	}
	code, stdout, _ = run(t, "status", "--pid", pid)
	if code != 0 || !strings.Contains(stdout, "no patches") {
		t.Errorf("status after revert: %q", stdout)
	}
}

// TestApplyRefusals checks that bad applies fail with one line naming the
// cause and leave the process as it was.
func TestApplyRefusals(t *testing.T) {
	dir, key, pub := keygen(t)
	file, orig := buildFixturePatch(t, "bounds_check", key, dir)
	other, _ := buildFixturePatch(t, "off_by_one", key, dir)
	_, _, otherPub := keygen(t)
	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(proc.Pid())
	// Above PID_MAX_LIMIT: no process has it, so no recycled pid is hit.
	deadPid := strconv.Itoa(1<<22 + 1)

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(dir, "tampered.hpatch")
	bad := append([]byte(nil), data...)
	bad[len(bad)/3] ^= 0x04
	if err := os.WriteFile(tampered, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.hpatch")
	if err := os.WriteFile(truncated, data[:len(data)-40], 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"tampered", []string{"apply", "--pid", pid, "--trust", pub, tampered}, 1, "patch:"},
		{"truncated", []string{"apply", "--pid", pid, "--trust", pub, truncated}, 1, "patch:"},
		{"untrusted key", []string{"apply", "--pid", pid, "--trust", otherPub, file}, 1, "untrusted"},
		{"no trust", []string{"apply", "--pid", pid, file}, 2, "--trust"},
		{"wrong build-id", []string{"apply", "--pid", pid, "--trust", pub, other}, 1, "build-id"},
		{"no such process", []string{"apply", "--pid", deadPid, "--trust", pub, file}, 1, "no such process"},
		{"pid and all", []string{"apply", "--pid", pid, "--all", "--trust", pub, file}, 2, "exactly one"},
		{"revert not applied", []string{"revert", "--pid", pid, "nothing-here"}, 1, "not applied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (%q)", code, tt.code, stderr)
			}
			first, _, _ := strings.Cut(stderr, "\n")
			if !strings.Contains(first, tt.want) {
				t.Errorf("error %q does not name %q", first, tt.want)
			}
		})
	}
	// Still the original program, still answering.
	if got, err := proc.Probe("set AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); err != nil || strings.Contains(got, "rejected") {
		t.Errorf("process after refusals answered %q, %v", got, err)
	}
}

// TestApplyAll applies with --all to several processes of one program and
// reverts with --all. The program is built with a build-id of its own, so
// --all can only ever match the processes this test started.
func TestApplyAll(t *testing.T) {
	dir, key, pub := keygen(t)
	fx, err := fixture.Load("off_by_one")
	if err != nil {
		t.Fatal(err)
	}
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		t.Fatal(err)
	}
	fl := fx.DefaultFlags()
	fl.LDFlags = append(fl.LDFlags, fmt.Sprintf("-Wl,--build-id=0x%x", nonce))
	orig, err := fx.Build(fixture.Orig, fl)
	if err != nil {
		t.Fatal(err)
	}
	fl.LDFlags[len(fl.LDFlags)-1] = fmt.Sprintf("-Wl,--build-id=0x%x01", nonce)
	fixed, err := fx.Build(fixture.Fixed, fl)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("all-%x", nonce)
	file := filepath.Join(dir, "all.hpatch")
	if code, _, stderr := run(t, "build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", file, "--id", id); code != 0 {
		t.Fatalf("build: %s", stderr)
	}
	// Nothing runs it yet: --all must say so and fail.
	if code, _, stderr := run(t, "apply", "--all", "--trust", pub, file); code != 1 || !strings.Contains(stderr, "no process") {
		t.Errorf("apply --all with no process: exit %d, %q", code, stderr)
	}
	var procs []*fixture.Proc
	want := map[int]bool{}
	for range 3 {
		p := fixture.Start(t, orig.Program)
		if err := p.WaitIdle(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		want[p.Pid()] = true
	}
	code, stdout, stderr := run(t, "apply", "--all", "--trust", pub, "--json", file)
	if code != 0 {
		t.Fatalf("apply --all: exit %d: %s", code, stderr)
	}
	var rep runReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Processes) != len(want) {
		t.Fatalf("apply --all reached %d processes, want %d: %+v", len(rep.Processes), len(want), rep)
	}
	for _, r := range rep.Processes {
		if !want[r.PID] || r.Result != "applied" {
			t.Errorf("apply --all: %+v", r)
		}
	}
	for _, p := range procs {
		if got, err := p.Probe(fx.Spec.Probes[0].Input); err != nil || got != fx.Spec.Probes[0].Fixed {
			t.Errorf("pid %d answered %q, %v; want %q", p.Pid(), got, err, fx.Spec.Probes[0].Fixed)
		}
	}
	code, stdout, stderr = run(t, "revert", "--all", "--json", id)
	if code != 0 {
		t.Fatalf("revert --all: exit %d: %s", code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || len(rep.Processes) != len(want) {
		t.Errorf("revert --all: %s (%v)", stdout, err)
	}
}

// TestStatusBaseline: once the program's file on disk is replaced (a
// package upgrade), status says the patched process runs the old build and
// needs a restart.
func TestStatusBaseline(t *testing.T) {
	dir, key, pub := keygen(t)
	file, orig := buildFixturePatch(t, "bounds_check", key, dir)
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	_, fixed := fixtureBuilds(t, fx)
	// Run a copy, so that the test can replace it.
	prog := filepath.Join(dir, "bounds_check")
	copyFile(t, orig.Program, prog, 0o755)
	proc := fixture.Start(t, prog)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(proc.Pid())
	if code, _, stderr := run(t, "apply", "--pid", pid, "--trust", pub, file); code != 0 {
		t.Fatalf("apply: %s", stderr)
	}
	status := func() procStatus {
		code, stdout, stderr := run(t, "status", "--pid", pid, "--json")
		var st []procStatus
		if code != 0 || json.Unmarshal([]byte(stdout), &st) != nil || len(st) != 1 {
			t.Fatalf("status: %d %s %s", code, stdout, stderr)
		}
		return st[0]
	}
	if b := status().Baseline; len(b) != 1 || b[0].OnDisk != "same" || b[0].Restart {
		t.Errorf("before the upgrade: %+v", b)
	}
	// The upgrade installs the fixed build under the same name (a new
	// file, renamed over the old one, as package managers do).
	copyFile(t, fixed.Program, prog+".new", 0o755)
	if err := os.Rename(prog+".new", prog); err != nil {
		t.Fatal(err)
	}
	if b := status().Baseline; len(b) != 1 || b[0].OnDisk != "replaced" || !b[0].Restart {
		t.Errorf("after the upgrade: %+v", b)
	}
	if _, stdout, _ := run(t, "status", "--pid", pid); !strings.Contains(stdout, "restart it to run the build on disk") {
		t.Errorf("status text does not ask for a restart: %q", stdout)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
}
