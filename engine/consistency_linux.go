//go:build linux && amd64

package engine

import (
	"encoding/binary"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/unwind"
)

// codeRange is the run-time range of one function whose code must not be
// in use while it is switched.
type codeRange struct {
	name       string
	start, end uint64
}

func inRanges(ranges []codeRange, pc uint64) *codeRange {
	for i := range ranges {
		if pc >= ranges[i].start && pc < ranges[i].end {
			return &ranges[i]
		}
	}
	return nil
}

// whenQuiet stops the world and runs fn once no thread executes, or has a
// return address into, any of ranges. While some thread does, it lets the
// process run and tries again, until timeout; then it returns a *BusyError.
// With a catcher (t.catch, during an apply) a busy thread is stopped the
// moment it leaves (see catchReturn); otherwise, or when its stack cannot
// be unwound exactly, the engine polls with a growing back-off. The world
// is always released before whenQuiet returns.
func (t *target) whenQuiet(ranges []codeRange, timeout time.Duration, fn func(*world) error) error {
	deadline := time.Now().Add(timeout)
	backoff := 200 * time.Microsecond
	for {
		// The whole attempt runs on the tracer thread: no hand-off between
		// threads (each a wake-up to wait for) while the world is stopped.
		w := newWorld(t.pid)
		var busy *BusyError
		err := w.critical(func() error {
			// Attach first (slow, nothing stopped), then stop.
			tids, err := threads(t.pid)
			if err == nil {
				err = w.seizeLocked(tids)
			}
			if err == nil {
				err = w.stopLocked(nil)
			}
			var hj *Hijack
			if err == nil {
				busy, hj, err = t.busy(w, ranges)
			}
			if busy != nil && !busy.NeverReturns && t.waiting != nil {
				t.waiting(busy.Function, busy.TID)
				t.waiting = nil // once
			}
			for err == nil && busy != nil && !busy.NeverReturns && hj != nil && t.catch != nil && time.Now().Before(deadline) {
				var caught bool
				if caught, err = t.catchReturn(w, t.catch, hj, deadline); err != nil || !caught {
					break
				}
				busy, hj, err = t.busy(w, ranges)
			}
			if err == nil && busy == nil {
				err = fn(w)
			}
			t.lastPause = w.releaseLocked()
			return err
		})
		w.tr.close()
		if err != nil {
			return err
		}
		if busy == nil {
			return nil
		}
		if busy.NeverReturns || time.Now().After(deadline) {
			return busy
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 20*time.Millisecond)
	}
}

// busy returns a *BusyError for the first thread found inside one of
// ranges: its PC, or any return address on its stack. When the thread's
// stack was unwound exactly, it also returns the return address that
// leaves the outermost such frame, for catchReturn. On the tracer thread.
func (t *target) busy(w *world, ranges []codeRange) (*BusyError, *Hijack, error) {
	for _, tid := range w.tids() {
		regs, err := getRegs(tid)
		if err != nil {
			return nil, nil, err
		}
		if frames, ok := t.frames(regs); ok {
			// Exact: the PC and every return address, from the CFI.
			pcs := make([]uint64, len(frames))
			for i, f := range frames {
				pcs[i] = f.LookupPC()
			}
			for i, pc := range pcs {
				r := inRanges(ranges, pc)
				if r == nil {
					continue
				}
				b := &BusyError{Function: r.name, TID: tid, NeverReturns: t.outermost(pcs[i+1:]) || (r.name == "main" && tid == t.pid)}
				hj := t.hijackFor(frames, pcs, ranges)
				if hj != nil {
					hj.TID = tid
				}
				return b, hj, nil
			}
			continue
		}
		r := inRanges(ranges, regs.Rip)
		if r == nil {
			if r, err = t.stackRefersTo(regs.Rsp, ranges); err != nil {
				return nil, nil, err
			}
		}
		if r != nil {
			// main leaves only when the program ends: waiting is useless.
			return &BusyError{Function: r.name, TID: tid, NeverReturns: r.name == "main" && tid == t.pid}, nil, nil
		}
	}
	return nil, nil, nil
}

// hijackFor returns the return address slot of the outermost frame in
// ranges of an exactly unwound thread, checked against the stack, or nil.
func (t *target) hijackFor(frames []unwind.Frame, pcs []uint64, ranges []codeRange) *Hijack {
	j := -1
	for i, pc := range pcs {
		if inRanges(ranges, pc) != nil {
			j = i
		}
	}
	if j < 0 || j+1 >= len(frames) || frames[j].CFA == 0 || frames[j+1].Exact {
		return nil // no caller, or a signal frame above: not a plain return
	}
	slot, ret := frames[j].CFA-8, frames[j+1].PC
	var b [8]byte
	if t.mem.Peek(b[:], slot) != nil || binary.LittleEndian.Uint64(b[:]) != ret {
		return nil
	}
	return &Hijack{Slot: slot, Ret: ret}
}

// outermost reports whether the frames above a function (its callers, as
// return addresses) are only the C library's start code: the function is
// a thread's start routine or main, and returns only when the thread ends.
func (t *target) outermost(callers []uint64) bool {
	if len(callers) == 0 {
		return true
	}
	for _, pc := range callers {
		m := t.moduleAt(pc)
		if m == nil || !strings.Contains(m.Path, "/libc.so") {
			return false
		}
	}
	return true
}

func (t *target) moduleAt(pc uint64) *Module {
	for i := range t.mods {
		if pc >= t.mods[i].Start && pc < t.mods[i].End {
			return &t.mods[i]
		}
	}
	return nil
}

// stackRefersTo scans a thread's stack, from its stack pointer to the end
// of the stack mapping, for any word that points into ranges. It finds
// every return address (and, conservatively, stale code pointers too,
// which can only make the engine wait or refuse, never patch unsafely).
func (t *target) stackRefersTo(sp uint64, ranges []codeRange) (*codeRange, error) {
	var end uint64
	for _, m := range t.maps {
		if sp >= m.Start && sp < m.End {
			end = m.End
			break
		}
	}
	if end == 0 {
		return nil, nil // a stack pointer outside every mapping: nothing to read
	}
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	for a := sp &^ 7; a < end; a += chunk {
		n := min(uint64(chunk), end-a)
		if err := t.mem.Peek(buf[:n], a); err != nil {
			return nil, err
		}
		for i := uint64(0); i+8 <= n; i += 8 {
			if r := inRanges(ranges, binary.LittleEndian.Uint64(buf[i:])); r != nil {
				return r, nil
			}
		}
	}
	return nil, nil
}
