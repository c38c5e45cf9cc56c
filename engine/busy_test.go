package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
)

// heldTarget builds engine/testdata/held (original and fixed), the signed
// patch between them, and starts the original, once its worker thread is
// inside slow_step, where it stays until the test sends "release".
func heldTarget(t *testing.T) (*fixture.Proc, *patch.Patch, patch.PublicKey) {
	t.Helper()
	orig, fixed := heldBuilds(t)
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "held-fix"})
	return startHeld(t, orig), p, pub
}

// startHeld starts a held program and waits until its worker is inside
// slow_step.
func startHeld(t *testing.T, path string) *fixture.Proc {
	t.Helper()
	proc := fixture.Start(t, path)
	waitInside(t, proc)
	return proc
}

// waitInside waits until the held worker waits inside slow_step.
func waitInside(t *testing.T, proc *fixture.Proc) {
	t.Helper()
	testutil.Eventually(t, time.Minute, func() bool { return probeNumber(t, proc, "inside") == 1 }, "the worker never entered slow_step")
}

// heldBuilds compiles engine/testdata/held, original and fixed.
func heldBuilds(t *testing.T) (orig, fixed string) {
	t.Helper()
	var err error
	orig, fixed, err = fixture.CompilePair("held", "testdata/held", "held.c", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	return orig, fixed
}

// release lets the held worker's current call of slow_step return.
func release(t *testing.T, proc *fixture.Proc) {
	t.Helper()
	if got, err := proc.Probe("release"); err != nil || got != "released 1" {
		t.Fatalf("release: %q, %v", got, err)
	}
}

// waitCalls waits until the held worker has completed more than n calls
// and waits inside slow_step again.
func waitCalls(t *testing.T, proc *fixture.Proc, n uint64, what string) {
	t.Helper()
	got := n
	testutil.Eventually(t, time.Minute, func() bool {
		got = probeNumber(t, proc, "calls")
		return got > n && probeNumber(t, proc, "inside") == 1
	}, func() string {
		return fmt.Sprintf("%s: the worker completed no call and came back (calls %d -> %d)", what, n, got)
	})
}

// waitCatching waits until an apply or revert at work on pid (in this
// process or another) waits for a thread to leave a function with its
// return address redirected: the record holds the hijack, the return
// address slot holds the stub's address, that thread alone is traced. A
// hijack left in the record by a killed hotpatch does not count: no thread
// is traced, and once the thread returned the slot holds a real return
// address again.
func waitCatching(t *testing.T, pid int) {
	t.Helper()
	testutil.Eventually(t, time.Minute, func() bool { return catching(pid) }, "no apply or revert waited for a thread of process %d to return", pid)
}

func catching(pid int) bool {
	tg, err := openTarget(pid)
	if err != nil {
		return false
	}
	defer tg.close()
	recs, _ := tg.records()
	tid := 0
	for _, r := range recs {
		if hj := r.rec.Hijack; hj != nil {
			var slot [8]byte
			if tg.mem.Peek(slot[:], hj.Slot) == nil && binary.LittleEndian.Uint64(slot[:]) == hj.Stub {
				tid = hj.TID
			}
		}
	}
	if tid == 0 {
		return false
	}
	tids, err := threads(pid)
	if err != nil {
		return false
	}
	for _, other := range tids {
		if traced(pid, other) != (other == tid) {
			return false
		}
	}
	return true
}

// traced reports whether a thread of pid has a tracer.
func traced(pid, tid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			return strings.TrimSpace(v) != "0"
		}
	}
	return false
}

// TestBusyRefused applies a patch to a function that a thread occupies all
// the time: after the timeout Apply names the function and the thread, and
// the process is exactly as before: same code, no patch memory, answering,
// and the worker's return address the real one again.
func TestBusyRefused(t *testing.T) {
	proc, p, pub := heldTarget(t)
	pid := proc.Pid()
	before := moduleText(t, pid, p)

	done := make(chan error, 1)
	go func() {
		_, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: 300 * time.Millisecond})
		done <- err
	}()
	err := testutil.Receive(t, done, time.Minute, "Apply with a 300ms timeout did not return")
	var busy *BusyError
	if !errors.As(err, &busy) {
		t.Fatalf("Apply: %v, want a *BusyError", err)
	}
	if busy.Function != "slow_step" || busy.TID == pid {
		t.Errorf("busy error names %s in thread %d; want slow_step in the worker thread", busy.Function, busy.TID)
	}
	if !strings.Contains(err.Error(), "slow_step") || !strings.Contains(err.Error(), "--timeout") {
		t.Errorf("message %q should name the function and the way out", err)
	}
	if after := moduleText(t, pid, p); !bytes.Equal(before, after) {
		t.Errorf("a refused apply changed the process's code")
	}
	maps, err := os.ReadFile("/proc/" + itoa(pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(maps, []byte(mappingPrefix)) {
		t.Errorf("a refused apply left patch memory behind")
	}
	if st, err := Status(pid); err != nil || len(st) != 0 {
		t.Errorf("Status after a refused apply = %+v, %v", st, err)
	}
	if got, err := proc.Probe("step"); err != nil || got != "step 101" {
		t.Errorf("process answered %q, %v; want the original 'step 101'", got, err)
	}
	// The worker's return address was redirected while Apply waited and
	// must be the real one again (the stub's memory is gone): let it
	// return, and its calls go on.
	release(t, proc)
	waitCalls(t, proc, 0, "after the refusal")
}

// TestBusyCaught applies a patch to the function that the worker occupies
// with only a few instructions between two calls, so that polling would
// practically never see it outside: the engine catches the moment it
// returns (the test lets it return once Apply waits for it), and the
// worker goes on with the fixed function. Revert catches it the same way.
func TestBusyCaught(t *testing.T) {
	proc, p, pub := heldTarget(t)
	pid := proc.Pid()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		res, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: time.Minute})
		if err == nil {
			t.Logf("applied after %v, pause %v", time.Since(start), res.Paused)
		}
		done <- err
	}()
	waitCatching(t, pid)
	release(t, proc)
	if err := testutil.Receive(t, done, 2*time.Minute, "Apply did not return"); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, err := proc.Probe("step"); err != nil || got != "step 1100" {
		t.Errorf("process answered %q, %v; want the fixed 'step 1100'", got, err)
	}
	// The worker now waits inside the patch's slow_step: the patch's own
	// call frame information unwinds it exactly, through the patch code.
	waitInside(t, proc)
	if !unwindsThroughPatch(t, pid) {
		t.Errorf("no thread was unwound exactly through the patch code")
	}
	before := probeNumber(t, proc, "calls")
	release(t, proc)
	waitCalls(t, proc, before, "after the apply")

	start = time.Now()
	go func() {
		_, err := Revert(pid, p.ID, time.Minute)
		if err == nil {
			t.Logf("reverted after %v", time.Since(start))
		}
		done <- err
	}()
	waitCatching(t, pid)
	release(t, proc)
	if err := testutil.Receive(t, done, 2*time.Minute, "Revert did not return"); err != nil {
		t.Fatalf("Revert: %v", err)
	}
	if got, err := proc.Probe("step"); err != nil || got != "step 101" {
		t.Errorf("after revert the process answered %q, %v", got, err)
	}
	checkNoLeftovers(t, pid)
}

// unwindsThroughPatch stops pid and reports whether some thread's exact
// unwind has a frame in patch code.
func unwindsThroughPatch(t *testing.T, pid int) bool {
	t.Helper()
	tg, err := openTarget(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	recs, err := tg.records()
	if err != nil || len(recs) != 1 {
		t.Fatalf("records: %v, %v", recs, err)
	}
	text := recs[0].base + recs[0].rec.Text[0]
	tg.cfi = tg.unwindModules()
	w, err := stopWorld(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer w.release()
	for _, tid := range w.tids() {
		var r unix.PtraceRegs
		w.tr.do(func() error { r, err = getRegs(tid); return err })
		frames, ok := tg.frames(r)
		for _, f := range frames {
			if pc := f.LookupPC(); ok && pc >= text && pc < text+recs[0].rec.Text[1] {
				return true
			}
		}
	}
	return false
}

// TestKilledWhileCatching kills hotpatch, apply then revert, while it waits
// for the worker to leave slow_step with its return address redirected:
// the worker returns through the stub on its own and goes on; the next run
// puts the return address back, completes or undoes the step and succeeds.
func TestKilledWhileCatching(t *testing.T) {
	orig, fixed := heldBuilds(t)
	_, patchFile, keyFile := patchFiles(t, orig, fixed, "held-kill")
	proc := startHeld(t, orig)
	pid := proc.Pid()
	for _, step := range []struct{ op, want string }{{"apply", "step 1100"}, {"revert", "step 101"}} {
		waitInside(t, proc)
		cmd, out, err := startKillHelper(pid, step.op, patchFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		// Kill it once it waits with the hijack in the record.
		waitCatching(t, pid)
		cmd.Process.Kill()
		cmd.Wait()
		if bad := stoppedThreads(pid); len(bad) > 0 {
			t.Fatalf("threads %v left stopped", bad)
		}
		before := probeNumber(t, proc, "calls")
		release(t, proc)
		waitCalls(t, proc, before, step.op+" killed")

		// A full run: it cleans up, then waits for the worker again.
		if cmd, out, err = startKillHelper(pid, step.op, patchFile, keyFile); err != nil {
			t.Fatal(err)
		}
		waitCatching(t, pid)
		release(t, proc)
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		if err := testutil.Receive(t, waited, helperTimeout, "a full %s did not end", step.op); err != nil {
			t.Fatalf("a full %s: %v\n%s", step.op, err, out)
		}
		if got, err := proc.Probe("step"); err != nil || got != step.want {
			t.Errorf("after a full %s the process answered %q, %v; want %q", step.op, got, err, step.want)
		}
	}
	if st, err := Status(pid); err != nil || len(st) != 0 {
		t.Errorf("Status at the end = %+v, %v; want nothing applied", st, err)
	}
	checkNoLeftovers(t, pid)
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestNeverReturns refuses at once, without waiting out the timeout, a
// patch of main's own loop: main leaves only when the program ends.
func TestNeverReturns(t *testing.T) {
	orig, fixed, err := fixture.CompilePair("mainloop", "testdata/mainloop", "mainloop.c")
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "mainloop-fix", AllowNeverApplies: true}) // the builder refuses it itself
	proc := fixture.Start(t, orig)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	// A timeout far beyond the test's deadline: the refusal must not wait
	// it out.
	done := make(chan error, 1)
	go func() {
		_, err := Apply(proc.Pid(), p, Options{Trusted: []patch.PublicKey{pub}, Timeout: time.Hour})
		done <- err
	}()
	err = testutil.Receive(t, done, 2*time.Minute, "Apply waits out its timeout instead of refusing at once")
	var busy *BusyError
	if !errors.As(err, &busy) || !busy.NeverReturns || busy.Function != "main" {
		t.Fatalf("Apply: %v, want a *BusyError for main that never returns", err)
	}
	if !strings.Contains(err.Error(), "never returns") {
		t.Errorf("message %q does not say main never returns", err)
	}
	if got, err := proc.Probe("hello"); err != nil || got != "1 6" {
		t.Errorf("process answered %q, %v", got, err)
	}
}

// TestSeccompRefused refuses a process under a seccomp filter before any
// remote system call (this one would be killed by memfd_create), naming
// the reason; the process runs on.
func TestSeccompRefused(t *testing.T) {
	bin, err := fixture.Compile("seccomp", []string{"testdata/seccomp/seccomp.c"}, "-O2")
	if err != nil {
		t.Fatal(err)
	}
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	p, pub, _ := signedPatch(t, fx, fx.DefaultFlags())
	proc := fixture.Start(t, bin)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	_, err = Apply(proc.Pid(), p, Options{Trusted: []patch.PublicKey{pub}})
	var se *SeccompError
	if !errors.As(err, &se) || se.Mode != 2 || !strings.Contains(err.Error(), "seccomp filter") {
		t.Fatalf("Apply: %v, want a *SeccompError for a filter", err)
	}
	if got, err := proc.Probe("abc"); err != nil || got != "1 4" {
		t.Errorf("process answered %q, %v", got, err)
	}
}

// TestBusyRecursion patches a function that a thread has on its stack six
// times (a recursion sleeping at the bottom): the return that is caught is
// the outermost one, after which no frame of it is left.
func TestBusyRecursion(t *testing.T) {
	orig, fixed, err := fixture.CompilePair("recurse", "testdata/recurse", "recurse.c", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "recurse-fix"})
	proc := fixture.Start(t, orig)
	if got, err := proc.Probe("walk"); err != nil || got != "walk 3" {
		t.Fatalf("first walk: %q, %v", got, err)
	}
	start := time.Now()
	if _, err := Apply(proc.Pid(), p, Options{Trusted: []patch.PublicKey{pub}, Timeout: time.Minute}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	t.Logf("applied after %v", time.Since(start))
	if got, err := proc.Probe("walk"); err != nil || got != "walk 21" {
		t.Errorf("after the apply: %q, %v; want the fixed 'walk 21'", got, err)
	}
	before := probeNumber(t, proc, "calls")
	after := before
	testutil.Eventually(t, time.Minute, func() bool {
		after = probeNumber(t, proc, "calls")
		return after > before
	}, func() string {
		return fmt.Sprintf("worker completed no walk after the apply (%d -> %d)", before, after)
	})
	if _, err := Revert(proc.Pid(), p.ID, time.Minute); err != nil {
		t.Fatalf("Revert: %v", err)
	}
	if got, err := proc.Probe("walk"); err != nil || got != "walk 3" {
		t.Errorf("after the revert: %q, %v", got, err)
	}
}

// TestPausedSingleThread: a process of one thread, busy in the function
// being replaced, is caught at its return: the apply's pause is the time
// that thread was stopped, never 0.
func TestPausedSingleThread(t *testing.T) {
	orig, fixed, err := fixture.CompilePair("single", "testdata/single", "single.c")
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "single-fix"})
	proc := fixture.Start(t, orig)
	if got, err := proc.Probe("step"); err != nil || got != "step 101" {
		t.Fatalf("first answer %q, %v", got, err)
	}
	res, err := Apply(proc.Pid(), p, Options{Trusted: []patch.PublicKey{pub}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Paused <= 0 {
		t.Errorf("Apply reports a pause of %v for the one thread it stopped", res.Paused)
	}
	if got, err := proc.Probe("step"); err != nil || got != "step 1100" {
		t.Errorf("after the apply %q, %v; want the fixed 'step 1100'", got, err)
	}
}
