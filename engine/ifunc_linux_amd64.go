//go:build linux && amd64

package engine

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// resolveIFUNC returns the implementation an IFUNC symbol (memcpy, strlen,
// …) resolves to in this process. It first looks for a GOT slot that the
// dynamic linker already filled for the symbol in some module; failing
// that, it calls the resolver in the process.
func (t *target) resolveIFUNC(sym string, resolverAddr uint64) (uint64, error) {
	for _, m := range t.mods {
		var slots []uint64
		withModuleELF(t.pid, m, t.maps, func(ef *elf.File) { slots = gotSlotsFor(ef, sym) })
		for _, s := range slots {
			var b [8]byte
			if err := t.mem.ReadAt(b[:], m.Bias+s); err != nil {
				continue
			}
			v := binary.LittleEndian.Uint64(b[:])
			// An unresolved lazy slot still points into its own module.
			if v != 0 && (v < m.Start || v >= m.End) {
				return v, nil
			}
		}
	}
	return t.callResolver(resolverAddr)
}

// gotSlotsFor returns the link-time addresses of GOT slots that the
// dynamic linker fills with the address of sym.
func gotSlotsFor(ef *elf.File, sym string) []uint64 {
	syms, err := ef.DynamicSymbols()
	if err != nil {
		return nil
	}
	var out []uint64
	for _, name := range []string{".rela.plt", ".rela.dyn"} {
		s := ef.Section(name)
		if s == nil {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		for i := 0; i+24 <= len(data); i += 24 {
			off := binary.LittleEndian.Uint64(data[i:])
			info := binary.LittleEndian.Uint64(data[i+8:])
			typ := elf.R_X86_64(info & 0xffffffff)
			idx := int(info >> 32)
			if (typ == elf.R_X86_64_JMP_SLOT || typ == elf.R_X86_64_GLOB_DAT) && idx > 0 && idx <= len(syms) && syms[idx-1].Name == sym {
				out = append(out, off)
			}
		}
	}
	return out
}

// callResolver calls an IFUNC resolver in the process and returns what it
// returns. The call "returns" to address 0: the fault that follows stops
// the thread, the result is read, the fault is discarded and the thread's
// registers are put back.
func (t *target) callResolver(fn uint64) (uint64, error) {
	w, err := stopThreads(t.pid, []int{t.pid})
	if err != nil {
		return 0, err
	}
	defer w.release()
	var result uint64
	err = w.tr.do(func() error {
		th := w.threads[t.pid]
		saved, err := getRegs(th.tid)
		if err != nil {
			return err
		}
		defer setRegs(th.tid, &saved)
		r := saved
		// Below the red zone, 16-byte aligned at the call, then the
		// return address.
		sp := ((saved.Rsp - 1024) &^ 15) - 8
		var zero [8]byte
		if err := t.mem.WriteAt(zero[:], sp); err != nil {
			return err
		}
		r.Rsp, r.Rip, r.Rax, r.Orig_rax = sp, fn, 0, ^uint64(0)
		if err := setRegs(th.tid, &r); err != nil {
			return err
		}
		for i := 0; i < 100; i++ {
			if err := unix.PtraceCont(th.tid, 0); err != nil {
				return err
			}
			var ws unix.WaitStatus
			if _, err := unix.Wait4(th.tid, &ws, unix.WALL, nil); err != nil {
				return err
			}
			if !ws.Stopped() {
				return fmt.Errorf("process %d ended while resolving an IFUNC", t.pid)
			}
			out, err := getRegs(th.tid)
			if err != nil {
				return err
			}
			if ws.StopSignal() == unix.SIGSEGV && out.Rip == 0 {
				result = out.Rax
				return nil
			}
			if sig := ws.StopSignal(); sig != unix.SIGTRAP && sig != unix.SIGSTOP && th.pending == 0 {
				th.pending = sig // deliver later; keep running the resolver
			}
		}
		return fmt.Errorf("IFUNC resolver at %#x did not return", fn)
	})
	return result, err
}
