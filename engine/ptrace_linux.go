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
	tid     int
	leader  bool // the thread-group leader (tid == pid)
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
// In a process being killed, the exit of a traced thread-group leader is
// reported only once its other traced threads are reaped: a wait for the
// leader alone would block for good. So while it waits for the leader, a
// watchdog reaps the process's other threads that have become zombies.
func waitStop(th *thread, onClone func(newTid int)) error {
	if th.leader {
		stop := make(chan struct{})
		defer close(stop)
		go reapZombieThreads(th.tid, stop)
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(th.tid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if errors.Is(err, unix.ECHILD) && zombie(th.tid) {
			return errThreadGone // exited, and reaped by the watchdog
		}
		if err != nil {
			return fmt.Errorf("waiting for thread %d: %w", th.tid, err)
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

// zombie reports whether thread tid has exited (a zombie, or gone).
func zombie(tid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// reapZombieThreads reaps, every millisecond until stop is closed, the
// threads of process pid other than its leader that have exited (zombies
// waiting for their tracer). Any thread of the tracer's process may reap a
// tracee; a zombie has nothing but its exit to report.
func reapZombieThreads(pid int, stop <-chan struct{}) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || tid == pid {
				continue
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
			if err != nil {
				continue
			}
			if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
				var ws unix.WaitStatus
				unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
			}
		}
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
