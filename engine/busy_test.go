package engine

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// busyTarget builds engine/testdata/busy (original and fixed), the signed
// patch between them, and starts the original.
func busyTarget(t *testing.T) (*fixture.Proc, *patch.Patch, patch.PublicKey) {
	t.Helper()
	orig, fixed := busyBuilds(t)
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "busy-fix"})
	proc := fixture.Start(t, orig)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	return proc, p, pub
}

// busyBuilds compiles engine/testdata/busy, original and fixed.
func busyBuilds(t *testing.T) (orig, fixed string) {
	t.Helper()
	var err error
	orig, fixed, err = fixture.CompilePair("busy", "testdata/busy", "busy.c", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	return orig, fixed
}

// TestBusyRefused applies a patch to a function that a thread occupies all
// the time: after the timeout Apply names the function and the thread, and
// the process is exactly as before: same code, no patch memory, answering.
func TestBusyRefused(t *testing.T) {
	proc, p, pub := busyTarget(t)
	pid := proc.Pid()
	before := moduleText(t, pid, p)

	start := time.Now()
	_, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: 300 * time.Millisecond})
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
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Apply took %v with a 300ms timeout", d)
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
	// must be the real one again: its calls go on.
	calls := probeNumber(t, proc, "calls")
	time.Sleep(1500 * time.Millisecond)
	if after := probeNumber(t, proc, "calls"); after <= calls {
		t.Errorf("worker completed no call after the refusal (%d -> %d)", calls, after)
	}
}

// TestBusyCaught applies a patch to the function that the worker occupies
// for a second at a time with only a few instructions between two calls:
// the engine catches the moment it returns, well within the timeout, and
// the worker goes on with the fixed function.
func TestBusyCaught(t *testing.T) {
	proc, p, pub := busyTarget(t)
	pid := proc.Pid()
	start := time.Now()
	res, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	t.Logf("applied after %v, pause %v", time.Since(start), res.Paused)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Apply took %v; the worker leaves slow_step every second", d)
	}
	if got, err := proc.Probe("step"); err != nil || got != "step 1100" {
		t.Errorf("process answered %q, %v; want the fixed 'step 1100'", got, err)
	}
	before := probeNumber(t, proc, "calls")
	time.Sleep(1500 * time.Millisecond)
	if after := probeNumber(t, proc, "calls"); after <= before {
		t.Errorf("worker completed no call after the apply (%d -> %d)", before, after)
	}
	// The worker now sleeps inside the patch's slow_step: the patch's own
	// call frame information unwinds it exactly, through the patch code.
	if !unwindsThroughPatch(t, pid) {
		t.Errorf("no thread was unwound exactly through the patch code")
	}
	start = time.Now()
	if _, err := Revert(pid, p.ID, 5*time.Second); err != nil {
		t.Fatalf("Revert: %v", err)
	}
	t.Logf("reverted after %v", time.Since(start))
	if got, err := proc.Probe("step"); err != nil || got != "step 101" {
		t.Errorf("after revert the process answered %q, %v", got, err)
	}
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
	orig, fixed := busyBuilds(t)
	_, patchFile, keyFile := patchFiles(t, orig, fixed, "busy-kill")
	proc := fixture.Start(t, orig)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := proc.Pid()
	for _, step := range []struct{ op, want string }{{"apply", "step 1100"}, {"revert", "step 101"}} {
		cmd, _, err := startKillHelper(pid, step.op, patchFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		// Kill it once the hijack is in the record.
		waiting := false
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && !waiting; {
			if tg, err := openTarget(pid); err == nil {
				recs, _ := tg.records()
				for _, r := range recs {
					waiting = waiting || r.rec.Hijack != nil
				}
				tg.close()
			}
			time.Sleep(200 * time.Microsecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if !waiting {
			t.Fatalf("%s: never saw hotpatch wait with a redirected return address", step.op)
		}
		if bad := stoppedThreads(pid); len(bad) > 0 {
			t.Fatalf("threads %v left stopped", bad)
		}
		before := probeNumber(t, proc, "calls")
		time.Sleep(1200 * time.Millisecond)
		if after := probeNumber(t, proc, "calls"); after <= before {
			t.Fatalf("%s: worker completed no call after the kill (%d -> %d)", step.op, before, after)
		}
		if _, err := runKillHelper(pid, step.op, patchFile, keyFile, 0); err != nil {
			t.Fatal(err)
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
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "mainloop-fix"})
	proc := fixture.Start(t, orig)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Apply(proc.Pid(), p, Options{Trusted: []patch.PublicKey{pub}, Timeout: time.Minute})
	var busy *BusyError
	if !errors.As(err, &busy) || !busy.NeverReturns || busy.Function != "main" {
		t.Fatalf("Apply: %v, want a *BusyError for main that never returns", err)
	}
	if !strings.Contains(err.Error(), "never returns") {
		t.Errorf("message %q does not say main never returns", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("refusal took %v; it should not wait out the timeout", d)
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
	if _, err := Apply(proc.Pid(), p, Options{Trusted: []patch.PublicKey{pub}, Timeout: 5 * time.Second}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	t.Logf("applied after %v", time.Since(start))
	if got, err := proc.Probe("walk"); err != nil || got != "walk 21" {
		t.Errorf("after the apply: %q, %v; want the fixed 'walk 21'", got, err)
	}
	before := probeNumber(t, proc, "calls")
	time.Sleep(1200 * time.Millisecond)
	if after := probeNumber(t, proc, "calls"); after <= before {
		t.Errorf("worker completed no walk after the apply (%d -> %d)", before, after)
	}
	if _, err := Revert(proc.Pid(), p.ID, 5*time.Second); err != nil {
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
