package engine

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/patch"
)

const tracerHelperEnv = "HOTPATCH_TRACER_HELPER"

// TestTracerHelper is the child of TestOtherTracer: it attaches to the
// thread HOTPATCH_TRACER_HELPER names (PTRACE_SEIZE, which does not stop
// it), as a debugger would, says "attached" and holds on until its stdin
// closes.
func TestTracerHelper(t *testing.T) {
	v := os.Getenv(tracerHelperEnv)
	if v == "" {
		t.Skip("run by TestOtherTracer")
	}
	tid, err := strconv.Atoi(v)
	if err != nil {
		t.Fatal(err)
	}
	// Attach from a thread that is not this process's main thread, as
	// a Go debugger's tracer thread usually is: TracerPid then names that
	// thread, and the message must still name this process.
	attached := make(chan error)
	go func() {
		runtime.LockOSThread() // for good: this OS thread is the tracer
		if unix.Gettid() == unix.Getpid() {
			// Locked on the main thread: trace from another one.
			go func() {
				runtime.LockOSThread()
				attached <- unix.PtraceSeize(tid)
				select {}
			}()
			select {}
		}
		attached <- unix.PtraceSeize(tid)
		select {}
	}()
	if err := <-attached; err != nil {
		t.Fatal(err)
	}
	fmt.Println("attached")
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// TestOtherTracer: with a debugger attached to one worker thread of the
// target (not its main thread), apply names that tracer; it used to say
// "waiting for thread N: no child processes". Once the tracer is gone the
// apply works.
func TestOtherTracer(t *testing.T) {
	proc, p, pub := busyTarget(t)
	pid := proc.Pid()
	tids, err := threads(pid)
	if err != nil || len(tids) < 2 {
		t.Fatalf("threads of the target: %v, %v", tids, err)
	}
	worker := 0
	for _, tid := range tids {
		if tid != pid {
			worker = tid
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTracerHelper$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), tracerHelperEnv+"="+strconv.Itoa(worker))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	stop := func() {
		if !done {
			done = true
			stdin.Close()
			cmd.Wait()
		}
	}
	defer stop()
	attached := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if sc.Text() == "attached" && !ok {
				ok = true
				attached <- true
			}
		}
		if !ok {
			attached <- false
		}
	}()
	select {
	case ok := <-attached:
		if !ok {
			t.Fatal("the tracer helper did not attach")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tracer helper did not attach in time")
	}

	_, err = Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: time.Second})
	want := fmt.Sprintf("traced by process %d", cmd.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "no child processes") {
		t.Fatalf("Apply with a tracer on thread %d: %v; want it to say %q", worker, err, want)
	}
	var be *BusyError
	if errors.As(err, &be) {
		t.Fatalf("Apply: %v", err)
	}
	stop()
	if _, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: 5 * time.Second}); err != nil {
		t.Fatalf("Apply once the tracer is gone: %v", err)
	}
}
