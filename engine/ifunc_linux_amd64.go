//go:build linux && amd64

package engine

import (
	"debug/elf"
	"encoding/binary"
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
			if err := t.mem.Peek(b[:], m.Bias+s); err != nil {
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
// returns (see session.call).
func (t *target) callResolver(fn uint64) (uint64, error) {
	var result uint64
	err := t.withSyscalls(func(s *session) error {
		var err error
		result, err = s.call(fn)
		return err
	})
	return result, err
}
