package cli

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/server/api"
)

// TestBuildNotes checks that build and inspect say what the builder could
// not check (type layouts without DWARF) and what a patch will not do (a
// start-up-only fix, new exports carried hidden), and that the opt-in flags
// turn those refusals into marked patches.
func TestBuildNotes(t *testing.T) {
	dir, key, _ := keygen(t)
	build := func(name string, args ...string) (code int, stdout, stderr, out string) {
		t.Helper()
		fx, err := fixture.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		orig, fixed := fixtureBuilds(t, fx)
		out = filepath.Join(dir, name+".hpatch")
		code, stdout, stderr = run(t, append([]string{"build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", out}, args...)...)
		return code, stdout, stderr, out
	}
	inspect := func(file string) (patch.Summary, string) {
		t.Helper()
		code, js, stderr := run(t, "inspect", "--json", file)
		if code != 0 {
			t.Fatalf("inspect --json: %s", stderr)
		}
		var s patch.Summary
		if err := json.Unmarshal([]byte(js), &s); err != nil {
			t.Fatal(err)
		}
		_, text, _ := run(t, "inspect", file)
		return s, text
	}

	// No -g: built, with a warning, and inspect says so.
	code, stdout, stderr, out := build("bounds_check")
	if code != 0 || !strings.Contains(stdout, "type layouts not checked (no DWARF)") {
		t.Errorf("build without DWARF: exit %d, %q %q", code, stdout, stderr)
	}
	if s, text := inspect(out); s.LayoutChecked || !strings.Contains(text, "not checked (no DWARF)") {
		t.Errorf("inspect of a patch built without DWARF: layout_checked %v\n%s", s.LayoutChecked, text)
	}
	// -g: checked.
	code, stdout, _, out = build("layout_new_type")
	if code != 0 || !strings.Contains(stdout, "type layouts checked with DWARF") {
		t.Errorf("build with DWARF: exit %d, %q", code, stdout)
	}
	if s, text := inspect(out); !s.LayoutChecked || !strings.Contains(text, "checked with DWARF") {
		t.Errorf("inspect of a checked patch: layout_checked %v\n%s", s.LayoutChecked, text)
	}

	// Start-up only: refused, then marked with the flag.
	if code, _, stderr, _ := build("startup_options"); code != 1 || !strings.Contains(stderr, "--allow-startup-only") {
		t.Errorf("startup-only fix: exit %d, %q; want a refusal naming the flag", code, stderr)
	}
	code, stdout, stderr, out = build("startup_options", "--allow-startup-only")
	if code != 0 || !strings.Contains(stdout, "startup-only") || !strings.Contains(stdout, "restart needed") {
		t.Errorf("--allow-startup-only: exit %d, %q %q", code, stdout, stderr)
	}
	if s, text := inspect(out); !s.StartupOnly || !strings.Contains(text, "restart needed") {
		t.Errorf("inspect of a start-up-only patch: startup_only %v\n%s", s.StartupOnly, text)
	}

	// New export: refused, then carried hidden and named.
	if code, _, stderr, _ := build("refuse_new_export"); code != 1 || !strings.Contains(stderr, "svc_port_valid") {
		t.Errorf("new export: exit %d, %q", code, stderr)
	}
	code, stdout, stderr, out = build("refuse_new_export", "--allow-new-exports")
	if code != 0 || !strings.Contains(stdout, "api change") || !strings.Contains(stdout, "svc_port_valid") {
		t.Errorf("--allow-new-exports: exit %d, %q %q", code, stdout, stderr)
	}
	if s, text := inspect(out); len(s.NewExports) != 1 || s.NewExports[0] != "svc_port_valid" || !strings.Contains(text, "api change") {
		t.Errorf("inspect: new_exports %v\n%s", s.NewExports, text)
	}
}

// TestApplyStartupOnly applies a start-up-only patch to a live process: it
// applies, but apply says restart needed (text and JSON), and the process
// indeed still behaves as the original.
func TestApplyStartupOnly(t *testing.T) {
	dir, key, pub := keygen(t)
	fx, err := fixture.Load("startup_options")
	if err != nil {
		t.Fatal(err)
	}
	orig, fixed := fixtureBuilds(t, fx)
	file := filepath.Join(dir, "startup.hpatch")
	if code, _, stderr := run(t, "build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", file, "--id", "startup-fix", "--allow-startup-only"); code != 0 {
		t.Fatalf("build: %s", stderr)
	}
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
	if len(rep.Processes) != 1 || rep.Processes[0].Result != "applied" || !rep.Processes[0].StartupOnly {
		t.Errorf("apply report %+v, want applied and startup_only", rep)
	}
	if !strings.Contains(stdout, `"startup_only": true`) {
		t.Errorf("apply --json lacks startup_only: %s", stdout)
	}
	// The process runs the patched parse_options never again: still vulnerable.
	if got, err := proc.Probe("set AAAAAAAAAAAAAAAAAAAA"); err != nil || got != "1 stored len=20" {
		t.Errorf("process answered %q, %v; a start-up-only patch cannot change it", got, err)
	}
	if code, stdout, _ := run(t, "revert", "--pid", pid, "startup-fix"); code != 0 {
		t.Fatalf("revert: %s", stdout)
	}
	// Text output on a second apply.
	code, stdout, stderr = run(t, "apply", "--pid", pid, "--trust", pub, file)
	if code != 0 || !strings.Contains(stdout, "restart needed") {
		t.Errorf("apply text: exit %d, %q %q", code, stdout, stderr)
	}
	// Later, status (read from the process alone) says so too.
	code, stdout, stderr = run(t, "status", "--pid", pid)
	if code != 0 || !strings.Contains(stdout, "startup-fix changes only start-up code: the fix is not in effect") {
		t.Errorf("status text: exit %d, %q %q", code, stdout, stderr)
	}
	code, stdout, _ = run(t, "status", "--pid", pid, "--json")
	if code != 0 || !strings.Contains(stdout, `"startup_only": true`) {
		t.Errorf("status --json: exit %d, %s; want startup_only", code, stdout)
	}
}

// TestReportRestartNeeded checks that the fleet report's table shows the
// devices a start-up-only patch was applied to as needing a restart.
func TestReportRestartNeeded(t *testing.T) {
	rep := &api.Report{CVEs: []api.CVEReport{{CVE: "CVE-2026-0042", Patches: []string{"kv-fix"}, Vulnerable: 2, NeedRestart: 1,
		Devices: []api.DeviceExposure{{Device: "d1", Name: "web1", State: "restart_needed"}}}}}
	var b strings.Builder
	if err := writeReport(&b, rep, "CVE-2026-0042"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2 (1 restart needed)", "restart_needed"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report does not show %q:\n%s", want, b.String())
		}
	}
}
