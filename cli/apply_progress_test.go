package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestApplyWaitingLine: an apply that has to wait for a busy function
// says so on stderr while it waits (the engine's busy fixture: a worker
// inside slow_step for a second at a time), and -v names the process;
// --json keeps stderr empty.
func TestApplyWaitingLine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (ptrace)")
	}
	orig, fixed, err := fixture.CompilePair("busy", "../engine/testdata/busy", "busy.c", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	dir, key, pub := keygen(t)
	out := filepath.Join(dir, "busy.hpatch")
	if code, _, stderr := run(t, "build", "--original", orig, "--patched", fixed, "--key", key, "-o", out, "--id", "busy-fix"); code != 0 {
		t.Fatalf("build: %s", stderr)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string // regexp on stderr
	}{
		{"text", nil, `^pid (\d+): slow_step is running in thread \d+; waiting up to 5s for it to return \(--timeout\)\n$`},
		{"verbose", []string{"-v"}, `^pid (\d+): applying busy-fix \(level 1, 1 function\(s\)\)\npid \d+: slow_step is running in thread \d+; waiting up to 5s for it to return \(--timeout\)\n$`},
		{"json", []string{"--json"}, `^$`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := fixture.Start(t, orig)
			// Once the worker completed a call it is in its loop, where
			// it spends all but a few instructions inside slow_step.
			for i := 0; ; i++ {
				r, err := p.Probe("calls")
				if err != nil {
					t.Fatal(err)
				}
				if r != "calls 0" {
					break
				}
				if i == 300 {
					t.Fatalf("the worker completed no call in 3s")
				}
				time.Sleep(10 * time.Millisecond)
			}
			args := append([]string{"apply", "--pid", strconv.Itoa(p.Pid()), "--trust", pub, "--timeout", "5s"}, tt.args...)
			code, stdout, stderr := run(t, append(args, out)...)
			if code != 0 || !strings.Contains(stdout, "applied") {
				t.Fatalf("apply: exit %d\n%s%s", code, stdout, stderr)
			}
			m := regexp.MustCompile(tt.want).FindStringSubmatch(stderr)
			if m == nil || (len(m) > 1 && m[1] != strconv.Itoa(p.Pid())) {
				t.Errorf("stderr %q, want %s", stderr, tt.want)
			}
		})
	}
}
