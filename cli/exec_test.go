package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestExec: hotpatch exec starts a program with its patch applied before
// any of its own code runs (its first line, printed before it reads
// anything, comes from the fixed function), skips a patch for another
// program, and exits with the program's status.
func TestExec(t *testing.T) {
	dir, key, pub := keygen(t)
	orig, fixed, err := fixture.CompilePair("early", filepath.Join("..", "engine", "testdata", "early"), "early.c")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "early.hpatch")
	if code, _, stderr := run(t, "build", "--original", orig, "--patched", fixed, "--key", key, "-o", file, "--id", "early-fix"); code != 0 {
		t.Fatalf("build: %s", stderr)
	}
	other, _ := buildFixturePatch(t, "bounds_check", key, dir)
	code, stdout, stderr := run(t, "exec", "--patch", file, "--patch", other, "--trust", pub, "--", orig, "3")
	if code != 3 {
		t.Errorf("exit %d, want the program's 3 (stderr %q)", code, stderr)
	}
	if stdout != "early 1100\n" {
		t.Errorf("the program printed %q; want the fixed function's first line 'early 1100'", stdout)
	}
	if !strings.Contains(stderr, "applied early-fix") || !strings.Contains(stderr, "skipped bounds_check-fix") {
		t.Errorf("stderr %q; want early-fix applied and bounds_check-fix skipped", stderr)
	}
	if code, _, stderr := run(t, "exec", "--trust", pub, "--", orig); code != 2 || !strings.Contains(stderr, "--patch") {
		t.Errorf("exec without --patch: exit %d, %q", code, stderr)
	}
}

// TestExecSignals: a signal to hotpatch exec reaches the program (here
// SIGTERM, which ends it), and hotpatch exec exits as it did (128+15).
func TestExecSignals(t *testing.T) {
	dir, key, pub := keygen(t)
	orig, fixed, err := fixture.CompilePair("early", filepath.Join("..", "engine", "testdata", "early"), "early.c")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "early.hpatch")
	if code, _, stderr := run(t, "build", "--original", orig, "--patched", fixed, "--key", key, "-o", file, "--id", "early-fix"); code != 0 {
		t.Fatalf("build: %s", stderr)
	}
	args, _ := json.Marshal([]string{"exec", "--patch", file, "--trust", pub, "--", orig})
	cmd := exec.Command(os.Args[0], "-test.run=^TestCLIHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), cliHelperEnv+"="+string(args))
	stdin, err := cmd.StdinPipe() // kept open: the program waits for input
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Once the program waits for input, it runs (patched, continued).
	for i := 0; !waitingChild(cmd.Process.Pid, "early-orig"); i++ {
		if i == 2000 {
			cmd.Process.Kill()
			t.Fatal("the program did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("hotpatch exec did not end after SIGTERM")
	}
	if !strings.Contains(out.String(), `"code":143`) {
		t.Errorf("hotpatch exec reported %q; want exit status 143 (the program ended by SIGTERM)", out.String())
	}
}

// waitingChild reports whether process pid has a child named comm that
// sleeps (blocked in a read), as /proc says.
func waitingChild(pid int, comm string) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, c := range strings.Fields(string(b)) {
			name, _ := os.ReadFile("/proc/" + c + "/comm")
			stat, _ := os.ReadFile("/proc/" + c + "/stat")
			i := strings.LastIndexByte(string(stat), ')')
			if strings.TrimSpace(string(name)) == comm && i > 0 && i+2 < len(stat) && stat[i+2] == 'S' {
				return true
			}
		}
	}
	return false
}
