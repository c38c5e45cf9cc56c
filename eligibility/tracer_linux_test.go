package eligibility

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestProcessTraced: a traced process is blocked, and the finding names the
// tracer's process, also when the tracing thread is not its main thread
// (TracerPid names the thread; a Go debugger traces from any thread).
func TestProcessTraced(t *testing.T) {
	needRoot(t)
	p := fixture.Start(t, compile(t, "elig-plain", "plain.c", fixture.PatchFlags...))
	if _, err := p.Probe("x"); err != nil {
		t.Fatal(err)
	}
	pid := p.Pid()
	// Trace from a locked thread that is not this process's main thread;
	// detach from it too (ptrace requests come from the tracing thread).
	req := make(chan func() error)
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // for good: this OS thread is the tracer
		if unix.Gettid() == unix.Getpid() {
			go func() {
				runtime.LockOSThread()
				for f := range req {
					done <- f()
				}
			}()
			select {}
		}
		for f := range req {
			done <- f()
		}
	}()
	on := func(f func() error) error { req <- f; return <-done }
	if err := on(func() error {
		if unix.Gettid() == unix.Getpid() {
			return fmt.Errorf("the tracer thread is the main thread")
		}
		return unix.PtraceSeize(pid)
	}); err != nil {
		t.Fatal(err)
	}
	defer on(func() error {
		// PTRACE_SEIZE does not stop the tracee; interrupt it, wait, detach.
		if err := unix.PtraceInterrupt(pid); err != nil {
			return err
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
			return err
		}
		return unix.PtraceDetach(pid)
	})
	r, err := Process(pid)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(r)["tracer"]; got != Block {
		t.Fatalf("tracer: %q, want %q; %+v", got, Block, r.Findings)
	}
	want := fmt.Sprintf("already traced by pid %d ", os.Getpid())
	for _, f := range r.Findings {
		if f.Check == "tracer" && !strings.Contains(f.Message, want) {
			t.Errorf("finding %q does not name this process (%q)", f.Message, want)
		}
	}
}
