//go:build linux && amd64

package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tracer runs every ptrace request on one locked OS thread: the kernel
// ties a tracee to the thread that attached it (Delve's rule).
type tracer struct {
	reqs chan func()
}

func newTracer() *tracer {
	t := &tracer{reqs: make(chan func())}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: the thread stays the tracer until close, then
		// dies with the goroutine, and the kernel detaches what is left.
		runtime.LockOSThread()
		// Its short sleeps between polls of a tracee (waitTracee) sleep
		// as asked, not 50 µs more (the default timer slack).
		unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
		close(ready)
		for f := range t.reqs {
			f()
		}
	}()
	<-ready
	return t
}

// do runs f on the tracer thread.
func (t *tracer) do(f func() error) error {
	errc := make(chan error, 1)
	t.reqs <- func() { errc <- f() }
	return <-errc
}

func (t *tracer) close() { close(t.reqs) }

// thread is one traced thread of the target.
type thread struct {
	tid int
	// leader: the process's main thread (tid == pid), which waitTracee
	// polls while other threads are traced.
	leader  bool
	stopped bool
	// pending is a signal that arrived while we were stopping the thread;
	// it is handed back when the thread resumes, so the program sees it.
	pending syscall.Signal
}

const ptraceOptions = unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACESYSGOOD

func ptraceSeize(tid int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(tid), 0, ptraceOptions, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// waitStop waits for tid to enter a ptrace stop. A signal-delivery stop is
// recorded in th.pending and the thread is treated as stopped (it will get
// the signal when it resumes). Clone events are reported to onClone.
//
// alone says no other thread of the process is traced (see waitTracee).
func waitStop(th *thread, alone bool, onClone func(newTid int)) error {
	var deadline time.Time
	if th.leader && !alone {
		deadline = time.Now().Add(stopTimeout)
	}
	for {
		ws, err := waitTracee(th.tid, th.leader && !alone, deadline)
		if errors.Is(err, errWaitTimeout) {
			return fmt.Errorf("thread %d did not stop within %v (%s); retry later", th.tid, stopTimeout, threadStateName(th.tid))
		}
		if errors.Is(err, unix.ECHILD) {
			if st := threadStateOf(th.tid); st == 'Z' || st == 'X' || st == 0 {
				return errThreadGone // exited, and reaped meanwhile
			}
		}
		if err != nil {
			return err
		}
		switch {
		case ws.Exited() || ws.Signaled():
			return errThreadGone
		case ws.Stopped():
			sig := ws.StopSignal()
			event := ws.TrapCause()
			switch {
			case sig == unix.SIGTRAP && event == unix.PTRACE_EVENT_CLONE:
				if onClone != nil {
					if msg, err := unix.PtraceGetEventMsg(th.tid); err == nil {
						onClone(int(msg))
					}
				}
				// A clone event stop: keep it stopped, it is a ptrace stop.
				th.stopped = true
				return nil
			case event == unix.PTRACE_EVENT_STOP || groupStop(ws):
				// Group-stop or PTRACE_INTERRUPT stop. (A group-stop
				// reports its signal, SIGSTOP say, with the event: not a
				// signal to hand back; a job-stopped process stays
				// stopped after the detach.)
				th.stopped = true
				return nil
			default:
				// Signal-delivery stop: remember the signal for later.
				if sig != unix.SIGTRAP && th.pending == 0 {
					th.pending = sig
				}
				th.stopped = true
				return nil
			}
		}
	}
}

var errThreadGone = errors.New("thread exited")

// errWaitTimeout is returned by waitTracee when its deadline passes.
var errWaitTimeout = errors.New("timed out waiting for a traced thread")

// stopTimeout bounds a wait for a thread to enter a ptrace stop it was
// asked for (an interrupt): it takes microseconds, unless the thread is in
// an uninterruptible wait in the kernel.
const stopTimeout = 10 * time.Second

// waitTracee waits until tid, a thread this tracer thread traces, changes
// state, and returns its wait status; errThreadGone when the thread died
// without a report; errWaitTimeout past a non-zero deadline (the thread is
// then left as it is).
//
// With poll, or a deadline, it polls (wait4 with WNOHANG); otherwise it
// blocks in wait4, which wakes the moment the thread stops (polling costs
// tens of microseconds per stop on a busy machine, while the world is
// stopped). Callers poll for a process's main thread while they trace other
// threads of it: a blocking wait for the main thread of a process that is
// killed would never return, since the kernel reports a main thread's exit
// only once every other thread is reaped, and those, being traced, wait as
// zombies for this very tracer to reap them. Any other thread's stop or
// exit is always reported.
func waitTracee(tid int, poll bool, deadline time.Time) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	if !poll && deadline.IsZero() {
		for {
			_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return ws, fmt.Errorf("waiting for thread %d: %w", tid, err)
			}
			return ws, nil
		}
	}
	start := time.Now()
	sleep := 5 * time.Microsecond
	for i := 0; ; i++ {
		n, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return ws, fmt.Errorf("waiting for thread %d: %w", tid, err)
		case n == tid:
			return ws, nil
		}
		// Most stops come within microseconds: look at /proc only after
		// a millisecond.
		if time.Since(start) > time.Millisecond {
			if st := threadStateOf(tid); st == 'Z' || st == 'X' || st == 0 {
				return ws, errThreadGone
			}
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return ws, errWaitTimeout
		}
		if i < 20 {
			// A stop usually comes within microseconds: yield first.
			unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			continue
		}
		// On the locked tracer thread: sleep in the kernel, keeping the
		// thread's P (a raw system call): through the Go scheduler, each
		// wake-up could wait for a P while the world is stopped.
		ts := unix.NsecToTimespec(int64(sleep))
		unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		sleep = min(2*sleep, time.Millisecond)
	}
}

// threadStateOf returns the state letter of thread tid (R, S, D, T, t,
// Z, X…), or 0 if it does not exist.
func threadStateOf(tid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// threadStateName describes thread tid's state for an error message.
func threadStateName(tid int) string {
	switch st := threadStateOf(tid); st {
	case 0:
		return "gone"
	case 'D':
		return "in an uninterruptible wait in the kernel"
	default:
		return "state " + string(rune(st))
	}
}

// groupStop reports a group-stop of a seized thread: the stop signal with
// PTRACE_EVENT_STOP (TrapCause sees an event only with SIGTRAP).
func groupStop(ws unix.WaitStatus) bool {
	return ws.Stopped() && (int(ws)>>16)&0xff == unix.PTRACE_EVENT_STOP
}

func getRegs(tid int) (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	err := unix.PtraceGetRegs(tid, &r)
	return r, err
}

func setRegs(tid int, r *unix.PtraceRegs) error { return unix.PtraceSetRegs(tid, r) }
