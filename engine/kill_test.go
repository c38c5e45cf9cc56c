package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
)

// The kill test runs apply and revert in a child process (this test binary,
// re-executed) and kills it with SIGKILL at random moments.
const killHelperEnv = "HOTPATCH_KILL_HELPER"

// TestKillHelper is the child: HOTPATCH_KILL_HELPER=apply|revert, with the
// pid, the patch file and the public key in the environment.
func TestKillHelper(t *testing.T) {
	op := os.Getenv(killHelperEnv)
	if op == "" {
		t.Skip("run by TestKilledAnyMoment")
	}
	var pid int
	fmt.Sscan(os.Getenv("HOTPATCH_KILL_PID"), &pid)
	p, err := patch.LoadFile(os.Getenv("HOTPATCH_KILL_PATCH"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := patch.ReadPublicKey(os.Getenv("HOTPATCH_KILL_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	// A long timeout: the tests that wait for it to catch a busy thread
	// decide when the thread leaves.
	switch op {
	case "apply":
		_, err = Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: helperTimeout / 2})
	case "revert":
		_, err = Revert(pid, p.ID, helperTimeout/2)
	}

	if err != nil {
		t.Fatal(err)
	}
}

// TestKilledAnyMoment kills hotpatch (apply or revert, in a child process)
// with SIGKILL at 200 random moments while it works on a 5-thread process.
// After every kill the process must run on (no thread left stopped) and
// answer; what it answers and its patch state must be one of "untouched",
// "applied" or a half-done step recorded in its patch mapping, which the
// next apply or revert completes or undoes. Every 20 kills an uninterrupted
// run must reach a clean state, and at the end, once reverted, the code is
// byte for byte the original, the trampoline slack is back, and no patch
// memory or memfd is left.
func TestKilledAnyMoment(t *testing.T) {
	if testing.Short() {
		t.Skip("200 kills")
	}
	fx, err := fixture.Load("multithreaded")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	p, patchFile, keyFile := patchFiles(t, orig.Target, fixed.Target, "kill-test")
	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := proc.Pid()
	before := moduleText(t, pid, p)

	run := func(op string, killAfter time.Duration) (time.Duration, error) {
		return runKillHelper(pid, op, patchFile, keyFile, killAfter)
	}
	state := func() string {
		st, err := Status(pid)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if len(st) > 1 {
			t.Fatalf("%d patch mappings: %+v", len(st), st)
		}
		if len(st) == 0 {
			return "untouched"
		}
		return st[0].State
	}
	answer := func() string {
		got, err := proc.Probe("withdraw -1")
		if err != nil {
			t.Fatalf("the process does not answer: %v", err)
		}
		switch {
		case strings.Contains(got, "rejected"):
			return "fixed"
		case strings.Contains(got, "balance="):
			return "orig"
		}
		t.Fatalf("unexpected answer %q", got)
		return ""
	}
	// An uninterrupted run of each, to know how long one takes.
	full, err := run("apply", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run("revert", 0); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for i := 0; i < 200; i++ {
		op := "apply"
		if s := state(); s == "applied" {
			op = "revert"
		}
		// Half the kills anywhere, half in the second half of a run,
		// where the process is touched.
		at := rand.Int64N(int64(full) + 1)
		if i%2 == 1 {
			at = int64(full)/2 + rand.Int64N(int64(full)/2+1)
		}
		if _, err := run(op, time.Duration(at)); err != nil {
			t.Fatal(err)
		}
		if bad := stoppedThreads(pid); len(bad) > 0 {
			t.Fatalf("kill %d (%s): threads %v left stopped", i, op, bad)
		}
		s, a := state(), answer()
		seen[s]++
		if leftovers(pid) {
			seen["trampoline or memfd left"]++
		}
		switch s {
		case "untouched":
			if a != "orig" {
				t.Fatalf("kill %d (%s): no patch mapped but the process answers as fixed", i, op)
			}
		case "applied":
			if a != "fixed" {
				t.Fatalf("kill %d (%s): patch applied but the process answers as the original", i, op)
			}
		}
		if i%20 == 19 {
			// The next run completes or undoes what was left.
			op := "revert"
			if s == "untouched" || s == "preparing" {
				op = "apply"
			}
			if _, err := run(op, 0); err != nil && !(op == "revert" && s != "applied" && strings.Contains(err.Error(), "not applied")) {
				t.Fatalf("run after kill %d: %v", i, err)
			}
			s, a := state(), answer()
			if !(s == "applied" && a == "fixed") && !(s == "untouched" && a == "orig") {
				t.Fatalf("after kill %d and a full %s: state %s, answers as %s", i, op, s, a)
			}
		}
	}
	t.Logf("states right after a kill: %v", seen)
	if state() == "applied" {
		if _, err := run("revert", 0); err != nil {
			t.Fatal(err)
		}
	} else if _, err := run("apply", 0); err != nil {
		t.Fatal(err)
	} else if _, err := run("revert", 0); err != nil {
		t.Fatal(err)
	}
	if s := state(); s != "untouched" {
		t.Fatalf("final state %s", s)
	}
	if a := answer(); a != "orig" {
		t.Fatalf("final answer as %s", a)
	}
	if after := moduleText(t, pid, p); !bytes.Equal(before, after) {
		t.Errorf("text after the final revert differs from the original")
	}
	checkNoLeftovers(t, pid)
}

// patchFiles builds and signs the patch between two builds and writes it and
// its public key to files, for a child hotpatch.
func patchFiles(t *testing.T, orig, fixed, id string) (*patch.Patch, string, string) {
	t.Helper()
	sp := testutil.SignedPatch(t, orig, fixed, builder.Options{ID: id}, nil)
	patchFile, keyFile := sp.WriteFiles(t, t.TempDir())
	return sp.Patch, patchFile, keyFile
}

// runKillHelper runs apply or revert in a child process and, with a
// non-zero killAfter, kills it with SIGKILL after that long.
func runKillHelper(pid int, op, patchFile, keyFile string, killAfter time.Duration) (time.Duration, error) {
	start := time.Now()
	cmd, out, err := startKillHelper(pid, op, patchFile, keyFile)
	if err != nil {
		return 0, err
	}
	if killAfter > 0 {
		time.Sleep(killAfter)
		cmd.Process.Kill()
		cmd.Wait()
		return time.Since(start), nil
	}
	// A hotpatch that never ends is a failure, not a hang of the test.
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(helperTimeout):
		cmd.Process.Kill()
		<-waited
		return 0, fmt.Errorf("%s did not end within %v:\n%s", op, helperTimeout, out.String())
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %v\n%s", op, err, out.String())
	}
	return time.Since(start), nil
}

// helperTimeout bounds one uninterrupted apply or revert in a child.
const helperTimeout = 2 * time.Minute

func startKillHelper(pid int, op, patchFile, keyFile string) (*exec.Cmd, *bytes.Buffer, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), killHelperEnv+"="+op, fmt.Sprintf("HOTPATCH_KILL_PID=%d", pid),
		"HOTPATCH_KILL_PATCH="+patchFile, "HOTPATCH_KILL_KEY="+keyFile)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, &out, cmd.Start()
}

// stoppedThreads lists the threads of pid that stay in a stopped or traced
// state (a killed tracer's threads are let go by the kernel at once; this
// allows a loaded machine ten seconds).
func stoppedThreads(pid int) []int {
	var bad []int
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		bad = bad[:0]
		tids, err := threads(pid)
		if err != nil {
			return nil
		}
		for _, tid := range tids {
			if st := threadState(pid, tid); st == 't' || st == 'T' {
				bad = append(bad, tid)
			}
		}
		if len(bad) == 0 {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return bad
}

// leftovers reports whether pid holds a patch memfd open or a trampoline
// slack that is not the file's bytes (what a hotpatch killed in the middle
// of a remote call leaves, for the next run to clean).
func leftovers(pid int) bool {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if l, _ := os.Readlink(fd); strings.Contains(l, mappingPrefix) {
			return true
		}
	}
	tg, err := openTarget(pid)
	if err != nil {
		return false
	}
	defer tg.close()
	for _, a := range tg.slackAreas() {
		cur := make([]byte, a.size)
		if tg.mem.Peek(cur, a.addr) == nil && !bytes.Equal(cur, a.file) {
			return true
		}
	}
	return false
}

// checkNoLeftovers fails unless pid has no patch mapping, no patch memfd
// open and every trampoline slack holds the file's bytes.
func checkNoLeftovers(t *testing.T, pid int) {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(maps, []byte(mappingPrefix)) {
		t.Errorf("patch memory left mapped:\n%s", maps)
	}
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if l, _ := os.Readlink(fd); strings.Contains(l, mappingPrefix) {
			t.Errorf("patch memfd left open: %s -> %s", fd, l)
		}
	}
	tg, err := openTarget(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	for _, a := range tg.slackAreas() {
		cur := make([]byte, a.size)
		if err := tg.mem.Peek(cur, a.addr); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(cur, a.file) {
			t.Errorf("trampoline slack at %#x not put back", a.addr)
		}
	}
}

// TestProcessExitsDuringApply kills the target (a process the test
// started) at random moments of an apply, from before it starts to the
// remote calls and the switch: Apply returns promptly with a one-line error
// or success, never hangs, and lets go of the dead process's threads (the
// test then reaps it: a thread the engine left traced would keep it
// unreaped).
func TestProcessExitsDuringApply(t *testing.T) {
	fx, err := fixture.Load("multithreaded")
	if err != nil {
		t.Fatal(err)
	}
	p, pub, orig := signedPatch(t, fx, fx.DefaultFlags())
	apply := func(pid int) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: time.Second})
			done <- err
		}()
		return done
	}
	// Uninterrupted applies, to know how long one takes (the second with
	// the caches warm).
	var full time.Duration
	for range 2 {
		proc := fixture.Start(t, orig.Program)
		if err := proc.WaitIdle(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := testutil.Receive(t, apply(proc.Pid()), time.Minute, "Apply did not return"); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		full = time.Since(start)
		proc.Kill()
	}

	outcomes := map[string]int{}
	for i := 0; i < 40; i++ {
		proc := fixture.Start(t, orig.Program)
		if err := proc.WaitIdle(); err != nil {
			t.Fatal(err)
		}
		done := apply(proc.Pid())
		time.Sleep(time.Duration(rand.Int64N(int64(full) + 1)))
		// SIGKILL without reaping: the process is the test's child, its
		// pid stays ours until proc reaps it.
		if err := syscall.Kill(proc.Pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := testutil.Receive(t, done, time.Minute, "kill %d: Apply did not return after its target was killed", i)
		switch {
		case err == nil:
			outcomes["applied before the exit"]++
		case !errors.Is(err, ErrNoProcess) || !strings.Contains(err.Error(), "exited during the apply") || strings.Contains(err.Error(), "\n"):
			t.Errorf("Apply on a process killed meanwhile: %q; want one line saying it exited", err)
		default:
			outcomes["refused: exited during the apply"]++
		}
		reaped := make(chan struct{})
		go func() { proc.Kill(); close(reaped) }()
		testutil.Receive(t, reaped, time.Minute, "kill %d: the killed process was never reaped (a thread left traced?)", i)
	}
	t.Logf("outcomes: %v", outcomes)
}
