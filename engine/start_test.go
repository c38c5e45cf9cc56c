package engine

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// lineReader returns the lines r gives, one by one, failing the test if
// none comes in time.
func lineReader(t *testing.T, r io.Reader) func() string {
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the program closed its output")
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no line from the program in time")
		}
		return ""
	}
}

// TestStartPatched: Start applies a patch before the program's own code
// runs: the line the program prints first, before it reads anything,
// already comes from the fixed function. A patch for a module the program
// does not map is reported as such, and the program runs on.
func TestStartPatched(t *testing.T) {
	orig, fixed, err := fixture.CompilePair("early", "testdata/early", "early.c")
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "early-fix"})
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	other, otherPub, _ := signedPatch(t, fx, fx.DefaultFlags())

	// Started plainly, it says the original's first line.
	plain := fixture.Start(t, orig)
	if got, err := plain.Probe("step"); err != nil || got != "early 101" {
		t.Fatalf("started plainly, its first line is %q, %v", got, err)
	}

	cmd := exec.Command(orig)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	res, err := Start(cmd, []*patch.Patch{p, other}, Options{Trusted: []patch.PublicKey{pub, otherPub}})
	if cmd.Process != nil {
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if len(res) != 2 || res[0].Err != nil || res[0].Result == nil || res[0].Result.Functions != 1 {
		t.Fatalf("Start results %+v; want %s applied", res, p.ID)
	}
	var mm *BuildIDMismatchError
	if !errors.As(res[1].Err, &mm) {
		t.Errorf("the patch of another program: %v, want a *BuildIDMismatchError", res[1].Err)
	}
	next := lineReader(t, stdout)
	if got := next(); got != "early 1100" {
		t.Errorf("its first line is %q; want the fixed function's 'early 1100'", got)
	}
	if _, err := io.WriteString(stdin, "step\n"); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "step 1100" {
		t.Errorf("step: %q", got)
	}
	if st, err := Status(cmd.Process.Pid); err != nil || len(st) != 1 || st[0].ID != p.ID || st[0].State != StateApplied {
		t.Errorf("Status = %+v, %v", st, err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil && !strings.Contains(err.Error(), "wait") {
		t.Errorf("the program ended with %v", err)
	}
}

// TestApplyJobStopped: a process stopped by job control (SIGSTOP, as a
// shell's ^Z) is patched and stays stopped until it is continued; then it
// runs the fixed code.
func TestApplyJobStopped(t *testing.T) {
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	p, pub, orig := signedPatch(t, fx, fx.DefaultFlags())
	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := proc.Pid()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for i := 0; threadState(pid, pid) != 'T'; i++ {
		if i == 1000 {
			t.Fatal("the process does not stop")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}}); err != nil {
		t.Fatalf("Apply to a stopped process: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if st := threadState(pid, pid); st != 'T' {
		t.Errorf("after the apply the process is in state %c; want it still stopped", st)
	}
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if got, err := proc.Probe("set AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); err != nil || !strings.Contains(got, "rejected") {
		t.Errorf("continued, it answered %q, %v; want the fixed code", got, err)
	}
}

const startHelperEnv = "HOTPATCH_START_HELPER"

// TestStartHelper is the child of TestStartKilled: it starts the program
// HOTPATCH_START_HELPER names with Start and hangs while the program is
// held at its entry point, until it is killed.
func TestStartHelper(t *testing.T) {
	prog := os.Getenv(startHelperEnv)
	if prog == "" {
		t.Skip("run by TestStartKilled")
	}
	faultHook = func(point string) error {
		if point == "start-held" {
			fmt.Println("held")
			time.Sleep(time.Hour)
		}
		return nil
	}
	cmd := exec.Command(prog)
	cmd.Stdin = os.Stdin
	Start(cmd, nil, Options{})
}

// TestStartKilled: hotpatch killed while the program it starts waits at
// its entry point leaves the program running: the program is continued
// (the end of its parent's thread sends SIGCONT), unpatched.
func TestStartKilled(t *testing.T) {
	orig, _, err := fixture.CompilePair("early", "testdata/early", "early.c")
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestStartHelper$", "-test.count=1", "-test.v")
	helper.Env = append(os.Environ(), startHelperEnv+"="+orig)
	// The program's stdin, kept open by the test (not closed by Wait),
	// so that it waits for input once it runs.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	helper.Stdin = r
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer func() { helper.Process.Kill(); helper.Wait() }()
	next := lineReader(t, out)
	for next() != "held" {
	}
	// The program: the helper's child, held in a job-control stop.
	var prog int
	for i := 0; prog == 0; i++ {
		if i == 2000 {
			t.Fatal("no child of the helper")
		}
		tids, _ := threads(helper.Process.Pid)
		for _, tid := range tids {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", helper.Process.Pid, tid))
			if f := strings.Fields(string(b)); len(f) > 0 {
				prog, _ = strconv.Atoi(f[0])
			}
		}
		time.Sleep(time.Millisecond)
	}
	defer unix.Kill(prog, unix.SIGKILL) // started by this test, through the helper
	if st := threadState(prog, prog); st != 'T' {
		t.Fatalf("the program is in state %c, want held (T)", st)
	}
	helper.Process.Kill()
	helper.Wait()
	// Continued: it runs on to its read of stdin.
	for i := 0; threadState(prog, prog) != 'S'; i++ {
		if i == 5000 {
			t.Fatalf("the program stays in state %c after hotpatch died", threadState(prog, prog))
		}
		time.Sleep(time.Millisecond)
	}
}
