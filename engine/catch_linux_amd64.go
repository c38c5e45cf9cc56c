//go:build linux && amd64

package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Catching a busy function's return.
//
// A thread inside a function being replaced is let run until it leaves
// it, and stopped at that very moment: the return address of the
// function's outermost frame on its stack is pointed at a small stub in
// the patch mapping,
//
//	mov %rax,-16(%rsp)        keep the return value (below the stack
//	mov $SYS_getpid,%eax       pointer: the callee's frame, now dead)
//	syscall                   the system-call stop the engine waits for
//	mov -16(%rsp),%rax
//	jmp *ret                  the real return address
//
// and the thread alone runs under PTRACE_SYSCALL while the others run
// freely. At the stub's system-call stop the engine puts the thread at the
// real return address (skipping the getpid), stops every other thread and
// checks again. No breakpoint is involved: the kernel keeps a thread's
// debug registers and trap flag when its tracer dies, and the thread then
// dies of SIGTRAP; a stub only costs a getpid. If hotpatch dies, the
// thread returns through the stub on its own; the redirected return
// address is in the patch record, and the next run puts it back before it
// removes the half-made patch.
//
// The stack then holds an address without unwind information for a
// while, so an exception thrown through that frame could not be unwound:
// the engine catches returns only in processes that map no C++ runtime,
// and polls in the others.

// catcher is what whenQuiet needs to catch returns during an apply.
type catcher struct {
	id     string // the patch
	state  string // its state while the catcher is in use
	stub   uint64
	record func(*Hijack) error // stores the hijack (nil: none) in the patch record
}

func returnStub(ret uint64) []byte {
	c := []byte{
		0x48, 0x89, 0x44, 0x24, 0xf0, // mov %rax,-16(%rsp)
		0xb8, sysGetpid, 0, 0, 0, // mov $getpid,%eax
		0x0f, 0x05, // syscall
		0x48, 0x8b, 0x44, 0x24, 0xf0, // mov -16(%rsp),%rax
		0xff, 0x25, 0, 0, 0, 0, // jmp *0(%rip)
	}
	c = binary.LittleEndian.AppendUint64(c, ret)
	return append(c, 0x90) // to 32 bytes; never reached
}

// stubStop is the PC at the stub's system-call stop.
const stubStop = 12

// cxxRuntime reports whether the process maps a C++ runtime, whose
// exceptions would need to unwind through a redirected return address.
func (t *target) cxxRuntime() bool {
	for _, m := range t.mods {
		if strings.Contains(m.Path, "/libstdc++") || strings.Contains(m.Path, "/libc++") {
			return true
		}
	}
	return false
}

// catchReturn redirects hj's return address to the stub, lets the whole
// process run with hj's thread under PTRACE_SYSCALL, and waits until that
// thread leaves the function or the deadline passes. Either way, when it
// returns without error every thread is stopped again (w holds them), the
// return address is the real one again, and the record holds no hijack.
// caught reports whether the thread left. On the tracer thread.
func (t *target) catchReturn(w *world, c *catcher, hj *Hijack, deadline time.Time) (caught bool, err error) {
	hj.Stub = c.stub
	if err := t.mem.Poke(returnStub(hj.Ret), hj.Stub); err != nil {
		return false, err
	}
	if err := c.record(hj); err != nil {
		return false, err
	}
	var slot [8]byte
	binary.LittleEndian.PutUint64(slot[:], hj.Stub)
	if err := t.mem.Poke(slot[:], hj.Slot); err != nil {
		c.record(nil)
		return false, err
	}
	w.detachExcept(hj.TID)
	th := w.threads[hj.TID]
	if err = faultAt("wait-return"); err == nil {
		caught, err = t.waitReturn(th, hj, deadline)
	}
	if errors.Is(err, errThreadGone) {
		w.dead = append(w.dead, hj.TID)
		delete(w.threads, hj.TID) // it ended: not inside any more
		caught, err = true, nil
	}
	if err != nil {
		// The thread is stopped; whatever happened, take the stub off
		// its stack before anything else runs it. If that fails, or the
		// thread is inside the stub, the stub must stay: the record keeps
		// the hijack, and the next run puts the return address back
		// before it removes the patch.
		uerr := faultAt("unhijack")
		if uerr == nil {
			uerr = t.unhijackStopped(hj)
		}
		if uerr == nil && t.inStub(th, hj) {
			uerr = fmt.Errorf("it is inside the return stub")
		}
		if uerr != nil {
			return false, &HalfDoneError{PID: t.pid, ID: c.id, State: c.state,
				Err: fmt.Errorf("%w; putting back the return address of thread %d failed too: %v", err, hj.TID, uerr)}
		}
		c.record(nil) // if this fails, the record names a hijack that is undone: harmless
		return false, err
	}
	if th.stopped && w.paused.IsZero() {
		// The pause starts again with this thread's stop (with no other
		// thread, stopLocked has nothing to interrupt and would not
		// start it: a busy single thread caught at its return showed
		// 0µs).
		w.paused = time.Now()
	}
	if err := w.stopLocked(nil); err != nil {
		return false, err
	}
	if err := c.record(nil); err != nil {
		return false, err
	}
	return caught, nil
}

// waitReturn runs on the tracer thread: it resumes th under PTRACE_SYSCALL
// until it stops at the stub, exits, or the deadline passes. On return th
// is stopped (unless it exited) and its return address is the real one:
// consumed by the return, or written back.
func (t *target) waitReturn(th *thread, hj *Hijack, deadline time.Time) (bool, error) {
	sig := 0
	interrupted := false
	for {
		if err := unix.PtraceSyscall(th.tid, sig); err != nil {
			return false, fmt.Errorf("resuming thread %d: %w", th.tid, err)
		}
		sig = 0
		limit := deadline
		if interrupted {
			limit = time.Now().Add(stopTimeout)
		}
		ws, err := waitTracee(th.tid, true, limit)
		if errors.Is(err, errWaitTimeout) && !interrupted {
			// Stop it where it is; the next stop tells.
			unix.PtraceInterrupt(th.tid)
			interrupted = true
			ws, err = waitTracee(th.tid, true, time.Now().Add(stopTimeout))
		}
		if errors.Is(err, errThreadGone) {
			th.stopped = false
			return true, errThreadGone
		}
		if err != nil {
			return false, err
		}
		if ws.Exited() || ws.Signaled() {
			th.stopped = false
			return true, errThreadGone
		}
		th.stopped = true
		r, err := getRegs(th.tid)
		if err != nil {
			return false, err
		}
		switch {
		case ws.StopSignal() == stopSysgood && r.Rip == hj.Stub+stubStop && r.Orig_rax == sysGetpid:
			// Out of the function: on to the real return address, with
			// the return value the stub kept, skipping the getpid.
			var v [8]byte
			if err := t.mem.Peek(v[:], r.Rsp-16); err != nil {
				return false, err
			}
			r.Rax, r.Rip, r.Orig_rax = binary.LittleEndian.Uint64(v[:]), hj.Ret, ^uint64(0)
			return true, setRegs(th.tid, &r)
		case r.Rip >= hj.Stub && r.Rip < hj.Stub+stubStop:
			// Between the return and the stub's system call: let it get
			// there.
			continue
		case interrupted:
			// Timed out, still inside: put the return address back.
			return false, t.unhijackStopped(hj)
		case ws.StopSignal() != stopSysgood && ws.TrapCause() != unix.PTRACE_EVENT_STOP && ws.StopSignal() != unix.SIGTRAP:
			sig = int(ws.StopSignal()) // the program's signal: deliver it
		}
	}
}

// inStub reports whether the stopped thread th is (or may be: its
// registers unreadable) inside the return stub of hj.
func (t *target) inStub(th *thread, hj *Hijack) bool {
	if !th.stopped {
		return false
	}
	r, err := getRegs(th.tid)
	if err != nil {
		return !errors.Is(err, unix.ESRCH)
	}
	return r.Rip >= hj.Stub && r.Rip < hj.Stub+returnStubSize
}

// unhijackStopped writes the real return address back if the slot still
// holds the stub's. The thread must be stopped.
func (t *target) unhijackStopped(hj *Hijack) error {
	var cur [8]byte
	if err := t.mem.Peek(cur[:], hj.Slot); err != nil {
		return nil // the stack is gone with the thread
	}
	if binary.LittleEndian.Uint64(cur[:]) != hj.Stub {
		return nil
	}
	binary.LittleEndian.PutUint64(cur[:], hj.Ret)
	return t.mem.Poke(cur[:], hj.Slot)
}

// unhijack undoes the hijack a killed hotpatch left in a patch mapping it
// never finished: once no thread is inside the stub, the real return
// address goes back to the stack, and the mapping can be removed.
func (t *target) unhijack(hj *Hijack) error {
	for try := 0; try < 1000; try++ {
		w, err := stopWorld(t.pid)
		if err != nil {
			return err
		}
		inside := false
		for _, tid := range w.tids() {
			var r unix.PtraceRegs
			w.tr.do(func() error { r, err = getRegs(tid); return err })
			if err == nil && r.Rip >= hj.Stub && r.Rip < hj.Stub+returnStubSize {
				inside = true
			}
		}
		if !inside {
			err = t.unhijackStopped(hj)
		}
		w.release()
		if !inside {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	return errors.New("a thread stays inside the return stub of an interrupted apply")
}
