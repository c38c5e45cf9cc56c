//go:build linux && amd64

package engine

import (
	"debug/elf"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/unwind"
)

// unwindModules loads the call frame information of every module the
// process maps (patch mappings and other code without CFI get a nil table,
// so a PC there stops the unwind with an error, never silently). It is done
// before any thread stops.
func (t *target) unwindModules() []unwind.Module {
	var out []unwind.Module
	for _, m := range t.mods {
		um := unwind.Module{Start: m.Start, End: m.End, Bias: m.Bias}
		um.Table = cached(modCache.cfi, m, func() (tab *unwind.Table, ok bool) {
			withModuleELF(t.pid, m, t.maps, func(ef *elf.File) {
				var err error
				tab, err = unwind.Load(ef)
				ok = err == nil
			})
			return tab, ok
		})
		out = append(out, um)
	}
	// Patch mappings carry the call frame information of their code.
	recs, _ := t.records()
	for _, a := range recs {
		um := unwind.Module{Start: a.base, End: a.base + a.size}
		if off, n := a.rec.Unwind[0], a.rec.Unwind[1]; n > 0 && off+n <= a.size {
			data := make([]byte, n)
			if t.mem.Peek(data, a.base+off) == nil {
				um.Table, _ = unwind.LoadEhFrame(data, a.base+off)
			}
		}
		out = append(out, um)
	}
	for _, m := range t.maps {
		if m.Path == "[vdso]" || (strings.Contains(m.Path, "/memfd:"+mappingPrefix) && !covered(out, m.Start)) {
			out = append(out, unwind.Module{Start: m.Start, End: m.End})
		}
	}
	return out
}

// frames unwinds a stopped thread. ok is false when the unwind is not
// trustworthy (no CFI somewhere, a frame found by frame pointers, a cut-off
// stack): the caller then falls back to the conservative stack scan.
func (t *target) frames(r unix.PtraceRegs) (frames []unwind.Frame, ok bool) {
	if t.cfi == nil {
		return nil, false
	}
	regs := unwind.Regs{
		RAX: r.Rax, RDX: r.Rdx, RCX: r.Rcx, RBX: r.Rbx, RSI: r.Rsi, RDI: r.Rdi, RBP: r.Rbp, RSP: r.Rsp,
		R8: r.R8, R9: r.R9, R10: r.R10, R11: r.R11, R12: r.R12, R13: r.R13, R14: r.R14, R15: r.R15, RIP: r.Rip,
	}
	fr, err := unwind.Unwind(regs, t.cfi, t.stackReader(r.Rsp), 0)
	if err != nil || len(fr) == 0 {
		return nil, false
	}
	for _, f := range fr {
		if f.FramePointer {
			return nil, false
		}
	}
	return fr, true
}

// stackMemory serves reads of a thread's stack from one bulk read made
// while the thread is stopped (the unwinder reads a few words per frame:
// one system call instead of dozens), and anything else from the process.
type stackMemory struct {
	base, end uint64 // the stack pointer and the end of its mapping
	buf       []byte // the stack from base, read so far
	mem       *memory
}

func (t *target) stackReader(sp uint64) unwind.Memory {
	sm := &stackMemory{mem: t.mem, base: sp}
	for _, m := range t.maps {
		if sp >= m.Start && sp < m.End {
			sm.end = m.End
			sm.grow(sp + 8<<10) // most unwinds need a few frames
			break
		}
	}
	return sm
}

// grow reads the stack up to at least upTo (bounded by the mapping), in
// one system call, doubling what it holds.
func (s *stackMemory) grow(upTo uint64) {
	n := max(uint64(len(s.buf))*2, upTo-s.base)
	n = min(n, s.end-s.base, 8<<20)
	if n <= uint64(len(s.buf)) {
		return
	}
	buf := make([]byte, n)
	if s.mem.Peek(buf, s.base) == nil {
		s.buf = buf
	}
}

func (s *stackMemory) ReadAt(p []byte, addr uint64) error {
	end := addr + uint64(len(p))
	if addr >= s.base && end <= s.end && end >= addr && end > s.base+uint64(len(s.buf)) {
		s.grow(end)
	}
	if addr >= s.base && end <= s.base+uint64(len(s.buf)) && end >= addr {
		copy(p, s.buf[addr-s.base:])
		return nil
	}
	return s.mem.Peek(p, addr)
}

func covered(mods []unwind.Module, addr uint64) bool {
	for _, m := range mods {
		if addr >= m.Start && addr < m.End {
			return true
		}
	}
	return false
}
