package engine

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// withFaults makes the engine's steps at the named points fail: the n-th
// time a point is reached (counting from 1), or every time for n = 0.
// Tests using it must not run in parallel with other engine tests.
func withFaults(t *testing.T, faults map[string]int) {
	t.Helper()
	seen := map[string]int{}
	faultHook = func(point string) error {
		n, ok := faults[point]
		if !ok {
			return nil
		}
		seen[point]++
		if n == 0 || seen[point] == n {
			return fmt.Errorf("injected failure at %s", point)
		}
		return nil
	}
	t.Cleanup(func() { faultHook = nil })
}

// TestApplyErrorAfterFirstWrite: an apply whose second redirect cannot be
// written puts the first back and removes the patch; if putting it back
// fails too, the patch stays mapped in state redirecting (a redirect points
// into it), the error says so, and the next apply undoes it and applies.
func TestApplyErrorAfterFirstWrite(t *testing.T) {
	fx, err := fixture.Load("inlined_static")
	if err != nil {
		t.Fatal(err)
	}
	p, pub, orig := signedPatch(t, fx, fx.DefaultFlags())
	redirects := 0
	for _, f := range p.Functions {
		if f.Redirected() {
			redirects++
		}
	}
	if redirects < 2 {
		t.Fatalf("the patch has %d redirects; the test needs 2", redirects)
	}
	opts := Options{Trusted: []patch.PublicKey{pub}}

	t.Run("rolled back", func(t *testing.T) {
		proc := fixture.Start(t, orig.Program)
		if err := proc.WaitIdle(); err != nil {
			t.Fatal(err)
		}
		pid := proc.Pid()
		pristine := moduleText(t, pid, p)
		withFaults(t, map[string]int{"redirect": 2})
		_, err := Apply(pid, p, opts)
		if err == nil || errors.Is(err, ErrHalfDone) || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("Apply: %v; want the injected failure, rolled back", err)
		}
		if !bytes.Equal(moduleText(t, pid, p), pristine) {
			t.Errorf("the code is not the original after the roll-back")
		}
		if n := patchMappings(t, pid); n != 0 {
			t.Errorf("%d patch mappings left", n)
		}
		if got := probe(t, proc, "read -5"); !strings.Contains(got, "read -5") {
			t.Errorf("process answered %q; want the original", got)
		}
	})

	t.Run("left redirecting", func(t *testing.T) {
		proc := fixture.Start(t, orig.Program)
		if err := proc.WaitIdle(); err != nil {
			t.Fatal(err)
		}
		pid := proc.Pid()
		pristine := moduleText(t, pid, p)
		withFaults(t, map[string]int{"redirect": 2, "rollback": 0})
		_, err := Apply(pid, p, opts)
		var hd *HalfDoneError
		if !errors.As(err, &hd) || hd.State != StateRedirecting || !strings.Contains(err.Error(), "injected") || !strings.Contains(err.Error(), "next") {
			t.Fatalf("Apply: %v; want a *HalfDoneError in state redirecting naming the failure and the way out", err)
		}
		if n := patchMappings(t, pid); n != 1 {
			t.Fatalf("%d patch mappings; the half-done patch must stay mapped", n)
		}
		if st, err := Status(pid); err != nil || len(st) != 1 || st[0].State != StateRedirecting {
			t.Errorf("Status = %+v, %v; want one patch in state redirecting", st, err)
		}
		// The redirect written points into the patch: it must still run.
		for i := 0; i < 3; i++ {
			if _, err := proc.Probe("read -5"); err != nil {
				t.Fatalf("the half-patched process does not answer: %v", err)
			}
		}
		faultHook = nil
		if _, err := Apply(pid, p, opts); err != nil {
			t.Fatalf("the next Apply: %v", err)
		}
		if got := probe(t, proc, "read -5"); !strings.Contains(got, "read 0") {
			t.Errorf("applied, the process answered %q", got)
		}
		if _, err := Revert(pid, p.ID, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(moduleText(t, pid, p), pristine) {
			t.Errorf("the code is not the original after the revert")
		}
		if n := patchMappings(t, pid); n != 0 {
			t.Errorf("%d patch mappings left", n)
		}
	})
}

// TestCatchErrorKeepsStub: an apply that fails while the busy worker's
// return address points at the return stub, and cannot put it back, leaves
// the patch mapped with the hijack recorded (state preparing): the worker
// returns through the stub and runs on, and the next apply cleans up and
// applies.
func TestCatchErrorKeepsStub(t *testing.T) {
	proc, p, pub := busyTarget(t)
	pid := proc.Pid()
	opts := Options{Trusted: []patch.PublicKey{pub}, Timeout: 5 * time.Second}
	withFaults(t, map[string]int{"wait-return": 1, "unhijack": 0})
	_, err := Apply(pid, p, opts)
	var hd *HalfDoneError
	if !errors.As(err, &hd) || hd.State != StatePreparing {
		t.Fatalf("Apply: %v; want a *HalfDoneError in state preparing", err)
	}
	if n := patchMappings(t, pid); n != 1 {
		t.Fatalf("%d patch mappings; the stub must stay mapped", n)
	}
	before := probeNumber(t, proc, "calls")
	time.Sleep(1500 * time.Millisecond)
	if after := probeNumber(t, proc, "calls"); after <= before {
		t.Errorf("worker completed no call after the failed apply (%d -> %d)", before, after)
	}
	faultHook = nil
	if _, err := Apply(pid, p, opts); err != nil {
		t.Fatalf("the next Apply: %v", err)
	}
	if got, err := proc.Probe("step"); err != nil || got != "step 1100" {
		t.Errorf("process answered %q, %v; want the fixed 'step 1100'", got, err)
	}
}
