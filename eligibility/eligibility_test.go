package eligibility

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// statuses returns check → status for the findings of r (the worst one
// when a check appears more than once).
func statuses(r *Report) map[string]Status {
	rank := map[Status]int{OK: 0, Warn: 1, Block: 2}
	m := map[string]Status{}
	for _, f := range r.Findings {
		if old, ok := m[f.Check]; !ok || rank[f.Status] > rank[old] {
			m[f.Check] = f.Status
		}
	}
	return m
}

func compile(t *testing.T, name, src string, flags ...string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	path, err := fixture.Compile(name, []string{filepath.Join("testdata", src)}, flags...)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBinary(t *testing.T) {
	patchable := fixture.PatchFlags
	tests := []struct {
		name  string
		src   string
		flags []string
		want  map[string]Status // the checks that must have these statuses
		ok    bool
		strip bool // run strip on a copy
	}{
		{"builder flags", "plain.c", patchable,
			map[string]Status{"symtab": OK, "relocations": OK, "build-id": OK, "flags": OK}, true, false},
		{"builder flags with -g", "plain.c", append([]string{"-g"}, patchable...),
			map[string]Status{"flags": OK}, true, false},
		{"stripped", "plain.c", patchable,
			map[string]Status{"symtab": Block, "relocations": Block}, false, true},
		{"no kept relocations", "plain.c", []string{"-O2", "-ffunction-sections"},
			map[string]Status{"symtab": OK, "relocations": Block}, false, false},
		{"no function sections", "plain.c", []string{"-g", "-O2", "-Wl,--emit-relocs"},
			map[string]Status{"relocations": OK, "flags": Warn}, true, false},
		{"no build-id", "plain.c", append([]string{"-Wl,--build-id=none"}, patchable...),
			map[string]Status{"build-id": Block}, false, false},
		{"swapcontext", "coroutine.c", patchable,
			map[string]Status{"context-switching": Warn}, true, false},
		{"shadow stack", "plain.c", append([]string{"-fcf-protection=full", "-Wl,-z,shstk"}, patchable...),
			map[string]Status{"cet": Warn}, true, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := compile(t, "elig"+strconv.Itoa(i), tt.src, tt.flags...)
			if tt.strip {
				out := filepath.Join(t.TempDir(), "stripped")
				if b, err := exec.Command("strip", "-o", out, bin).CombinedOutput(); err != nil {
					t.Fatalf("strip: %v: %s", err, b)
				}
				bin = out
			}
			r, err := Binary(bin)
			if err != nil {
				t.Fatal(err)
			}
			got := statuses(r)
			for check, want := range tt.want {
				if got[check] != want {
					t.Errorf("%s: %q, want %q; report: %+v", check, got[check], want, r.Findings)
				}
			}
			if r.Eligible != tt.ok {
				t.Errorf("eligible %v, want %v: %+v", r.Eligible, tt.ok, r.Findings)
			}
			for _, f := range r.Findings {
				if f.Status == Block && f.Fix == "" && f.Check != "arch" {
					t.Errorf("%s blocks without saying what to do", f.Check)
				}
			}
		})
	}
}

func TestBinaryNotELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "script")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	if _, err := Binary(p); err == nil || !strings.Contains(err.Error(), "not a readable ELF file") {
		t.Errorf("got %v", err)
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (attach rights over the test's processes, all capabilities)")
	}
}

func TestProcess(t *testing.T) {
	needRoot(t)
	plain := compile(t, "elig-plain", "plain.c", fixture.PatchFlags...)
	sec := compile(t, "elig-seccomp", "seccomp.c", fixture.PatchFlags...)
	stripped := filepath.Join(t.TempDir(), "stripped")
	if b, err := exec.Command("strip", "-o", stripped, plain).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v: %s", err, b)
	}
	for _, tt := range []struct {
		name string
		bin  string
		want map[string]Status
	}{
		{"plain", plain, map[string]Status{"ptrace": OK, "seccomp": OK, "symtab": OK}},
		{"seccomp filter", sec, map[string]Status{"ptrace": OK, "seccomp": Block}},
		// A stripped program runs, and is patched with a patch built
		// from a rebuild: a warning, not a block.
		{"stripped", stripped, map[string]Status{"symtab": Warn, "relocations": Warn}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.Start(t, tt.bin)
			if _, err := p.Probe("x"); err != nil {
				t.Fatal(err)
			}
			r, err := Process(p.Pid())
			if err != nil {
				t.Fatal(err)
			}
			got := statuses(r)
			for check, want := range tt.want {
				if got[check] != want {
					t.Errorf("%s: %q, want %q; report: %+v", check, got[check], want, r.Findings)
				}
			}
			blocked := false
			for _, st := range tt.want {
				blocked = blocked || st == Block
			}
			if r.Eligible == blocked {
				t.Errorf("eligible %v, want %v: %+v", r.Eligible, !blocked, r.Problems())
			}
		})
	}
	if _, err := Process(1 << 30); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Errorf("a missing process: %v", err)
	}
}

const helperEnv = "HOTPATCH_ELIGIBILITY_HELPER"

// TestHostHelper prints Host() or Process(PID) as JSON, as the user and
// capabilities it was started with.
func TestHostHelper(t *testing.T) {
	what := os.Getenv(helperEnv)
	if what == "" {
		t.Skip("run by TestHost and TestProcessAsOtherUser")
	}
	var r *Report
	if what == "host" {
		r = Host()
	} else {
		pid, _ := strconv.Atoi(what)
		var err error
		if r, err = Process(pid); err != nil {
			t.Fatal(err)
		}
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

// asHelper runs TestHostHelper under setpriv with args, and returns its
// report.
func asHelper(t *testing.T, what string, setpriv ...string) *Report {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv")
	}
	args := append(append([]string{}, setpriv...), "--", os.Args[0], "-test.run=^TestHostHelper$", "-test.count=1")
	cmd := exec.Command("setpriv", args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+what)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	var r Report
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	return &r
}

func TestHost(t *testing.T) {
	needRoot(t)
	full := Host()
	if !full.Eligible {
		t.Fatalf("root with every capability is not eligible: %+v", full.Problems())
	}
	// The set of hotpatchd.service less CAP_CHECKPOINT_RESTORE: the
	// mistake of issue 17, which made the agent patch nothing.
	r := asHelper(t, "host", "--bounding-set", "-all,+sys_ptrace,+dac_override,+net_admin,+syslog,+sys_nice,+kill")
	var blocked []string
	for _, f := range r.Problems() {
		if f.Status == Block {
			blocked = append(blocked, f.Check+": "+f.Message)
		}
	}
	sort.Strings(blocked)
	want := []string{
		"capabilities: missing CAP_CHECKPOINT_RESTORE: needed to open /proc/PID/map_files to read the modules a process maps",
		"map-files: cannot open /proc/PID/map_files (open /proc/self/map_files/",
	}
	if len(blocked) != len(want) {
		t.Fatalf("blocked: %q, want %q", blocked, want)
	}
	for i := range want {
		if !strings.HasPrefix(blocked[i], want[i]) {
			t.Errorf("blocked[%d] = %q, want it to start with %q", i, blocked[i], want[i])
		}
	}
}

// TestProcessAsOtherUser: a user without capabilities is told it may not
// attach to root's process, and why.
func TestProcessAsOtherUser(t *testing.T) {
	needRoot(t)
	p := fixture.Start(t, compile(t, "elig-plain", "plain.c", fixture.PatchFlags...))
	r := asHelper(t, strconv.Itoa(p.Pid()), "--reuid", "nobody", "--regid", "nogroup", "--clear-groups")
	got := statuses(r)
	want := map[string]Status{"ptrace": Block, "map-files": Block, "mem": Block}
	for k := range got {
		if _, ok := want[k]; !ok {
			delete(got, k)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" || r.Eligible {
		t.Errorf("eligible %v; statuses (-want +got):\n%s", r.Eligible, diff)
	}
}
