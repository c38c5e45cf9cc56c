package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/eligibility"
	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestCheck runs hotpatch check as a user would: on a build made for
// patching, on the same build stripped, on a running process, in text and
// JSON, and with a wrong combination of arguments.
func TestCheck(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	orig, _, err := fixture.CompilePair("ledger", "../demo/ledger", "ledger.c")
	if err != nil {
		t.Fatal(err)
	}
	stripped := filepath.Join(t.TempDir(), "ledger")
	if out, err := exec.Command("strip", "-o", stripped, orig).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v: %s", err, out)
	}

	code, stdout, stderr := run(t, "check", orig)
	if code != 0 || !strings.HasPrefix(stdout, orig+": can be hotpatched\n") || !strings.Contains(stdout, "ok     relocations") {
		t.Errorf("check on a patchable build: exit %d\n%s%s", code, stdout, stderr)
	}

	code, stdout, stderr = run(t, "check", stripped)
	if code != 1 || !strings.Contains(stdout, "CANNOT be hotpatched") || !strings.Contains(stdout, "block  symtab") ||
		!strings.Contains(stdout, "fix: rebuild the same source") || !strings.Contains(stdout, "fix: as above") ||
		stderr != "hotpatch check: cannot be hotpatched as it is (see above)\n" {
		t.Errorf("check on a stripped build: exit %d\n%s%s", code, stdout, stderr)
	}

	code, stdout, _ = run(t, "check", "--json", stripped)
	var r eligibility.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != 1 || r.Eligible || r.Target != stripped {
		t.Errorf("check --json: exit %d, %v: %s", code, err, stdout)
	}

	if os.Geteuid() == 0 {
		p := fixture.Start(t, orig)
		code, stdout, stderr = run(t, "check", "--pid", strconv.Itoa(p.Pid()))
		if code != 0 || !strings.Contains(stdout, "ok     ptrace") || !strings.Contains(stdout, "ok     seccomp") {
			t.Errorf("check --pid: exit %d\n%s%s", code, stdout, stderr)
		}
	}

	for _, args := range [][]string{{"check"}, {"check", orig, "--host"}, {"check", "--pid", "1", "--host"}} {
		if code, _, stderr := run(t, args...); code != 2 || !strings.Contains(stderr, "give one of FILE, --pid PID or --host") {
			t.Errorf("%q: exit %d, %s", args, code, stderr)
		}
	}
}
