package kmsg

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// deadline bounds every wait on the kernel, so that no test can hang.
const deadline = 10 * time.Second

// open opens a Reader for the test, or skips the test with the reason it
// cannot. The Reader is closed at cleanup or at the deadline, which ends
// any Next.
func open(t *testing.T) *Reader {
	t.Helper()
	r, err := Open()
	if err != nil {
		t.Skipf("cannot read the kernel log: %v", err)
	}
	timer := time.AfterFunc(deadline, func() { r.Close() })
	t.Cleanup(func() {
		timer.Stop()
		r.Close()
	})
	return r
}

func TestNextSegfault(t *testing.T) {
	trace, err := os.ReadFile("/proc/sys/debug/exception-trace")
	if err != nil || strings.TrimSpace(string(trace)) != "1" {
		t.Skipf("the kernel does not log faults (debug.exception-trace = %q, %v)", trace, err)
	}
	bin, err := fixture.Compile("kmsg-segv", []string{"testdata/segv.c"}, "-O0")
	if err != nil {
		t.Fatal(err)
	}
	crash := func() int {
		cmd := exec.Command(bin)
		cmd.Dir = t.TempDir() // any core file lands here
		err := cmd.Run()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGSEGV {
			t.Fatalf("%s: %v, want SIGSEGV", bin, err)
		}
		return cmd.Process.Pid
	}
	before := crash() // logged before Open: Next must not return it
	r := open(t)
	pid := crash()
	for {
		f, err := r.Next()
		if err != nil {
			t.Fatalf("no fault report for pid %d within %v (rate-limited by kernel.printk_ratelimit?): %v", pid, deadline, err)
		}
		if f.PID == before {
			t.Fatalf("Next returned %+v, logged before Open", f)
		}
		if f.PID != pid {
			continue // another process's
		}
		if f.Kind != "segfault" || f.Addr != 16 || f.Comm != "kmsg-segv" || f.IP == 0 || f.SP == 0 || f.Time <= 0 {
			t.Errorf("fault = %+v, want a segfault of kmsg-segv at 0x10", f)
		}
		return
	}
}

func TestCloseUnblocksNext(t *testing.T) {
	t.Parallel()
	r := open(t)
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := r.Next(); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond) // let Next block (or not: either must work)
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Next after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(deadline):
		t.Fatal("Next still blocked after Close")
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
