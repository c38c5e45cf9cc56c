package engine

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/build"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// busyTarget builds engine/testdata/busy (original and fixed), the signed
// patch between them, and starts the original.
func busyTarget(t *testing.T) (*fixture.Proc, *patch.Patch, patch.PublicKey) {
	t.Helper()
	flags := []string{"-O2", "-pthread", "-ffunction-sections", "-fdata-sections", "-Wl,--emit-relocs"}
	orig, err := fixture.Compile("busy-orig", []string{"testdata/busy/orig/busy.c"}, flags...)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := fixture.Compile("busy-fixed", []string{"testdata/busy/fixed/busy.c"}, flags...)
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, build.Options{ID: "busy-fix"})
	proc := fixture.Start(t, orig)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	return proc, p, pub
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
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestNeverReturns refuses at once, without waiting out the timeout, a
// patch of main's own loop: main leaves only when the program ends.
func TestNeverReturns(t *testing.T) {
	flags := []string{"-O2", "-ffunction-sections", "-fdata-sections", "-Wl,--emit-relocs"}
	orig, err := fixture.Compile("mainloop-orig", []string{"testdata/mainloop/orig/mainloop.c"}, flags...)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := fixture.Compile("mainloop-fixed", []string{"testdata/mainloop/fixed/mainloop.c"}, flags...)
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, build.Options{ID: "mainloop-fix"})
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
