package builder

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// C++ exception handling. When an exception passes through a function, the
// C++ runtime finds the function's FDE in the module's .eh_frame (through
// PT_GNU_EH_FRAME) and, if the FDE names one, its LSDA in
// .gcc_except_table: the try/catch regions and cleanups, and where their
// handlers start. Patch code lives in memory that no loaded module
// describes, so the runtime would find neither for it, and a throw through
// the new code would end the process (std::terminate). A changed function
// with an LSDA, or one that throws, is therefore refused until the engine
// can register exception tables for patch code.

// lsdaFuncs returns the functions of m whose FDE names an LSDA: with
// --emit-relocs, the FDE's initial location and its LSDA pointer both carry
// a relocation, so no pointer encodings need decoding.
func (m *module) lsdaFuncs() map[*symbol]bool {
	var eh, lsda *section
	for _, s := range m.sections {
		switch s.name {
		case ".eh_frame":
			eh = s
		case ".gcc_except_table":
			lsda = s
		}
	}
	if eh == nil || lsda == nil || eh.data == nil {
		return nil
	}
	out := map[*symbol]bool{}
	for off := uint64(0); off+8 <= uint64(len(eh.data)); {
		length := uint64(binary.LittleEndian.Uint32(eh.data[off:]))
		if length == 0 || length == 0xffffffff {
			break // terminator, or a 64-bit entry that gcc never writes
		}
		end := off + 4 + length
		if end > uint64(len(eh.data)) {
			break
		}
		if id := binary.LittleEndian.Uint32(eh.data[off+4:]); id != 0 { // an FDE
			var fn *symbol
			has := false
			for _, r := range m.relocsIn(eh.addr+off+8, length-4) {
				t := symValue(r)
				if s := m.sectionAt(t); s != nil && s.kind == secCode && fn == nil {
					fn = m.funcAt(t)
				}
				if t >= lsda.addr && t < lsda.addr+lsda.size {
					has = true
				}
			}
			if fn != nil && has {
				out[fn] = true
			}
		}
		off = end
	}
	return out
}

// throws reports whether a symbol name is a function that raises or
// resumes a C++ exception.
func throws(name string) bool {
	switch name {
	case "__cxa_throw", "__cxa_rethrow", "_Unwind_Resume", "_Unwind_RaiseException", "__cxa_throw_bad_array_new_length":
		return true
	}
	return strings.HasPrefix(name, "_ZSt") && strings.Contains(name, "__throw_")
}

// checkEH refuses a patch whose code has C++ exception handlers or
// cleanups, or raises or resumes an exception itself: in both cases the
// runtime would look for the new code's tables and not find them.
func (b *builder) checkEH(funcs []*symbol) error {
	lsda := b.fixed.lsdaFuncs()
	for _, f := range funcs {
		if lsda[f] {
			return &UnsupportedError{Function: f.display(), Reason: "it has C++ exception handling (try/catch or cleanups, described by an LSDA in .gcc_except_table); patch code cannot carry exception tables yet, so a throw through the new code would end the process; apply this fix with a restart"}
		}
		fields, err := b.codeFields(b.fixed, f)
		if err != nil {
			return err
		}
		for _, fl := range fields {
			r, err := b.fixed.refOf(fl, f.display())
			if err != nil {
				continue // reported when the field is bound
			}
			name := r.name
			if r.kind == refFunc {
				name = r.sym.base
			}
			if throws(name) {
				return &UnsupportedError{Function: f.display(), Reason: fmt.Sprintf(
					"it throws a C++ exception (calls %s); the runtime cannot unwind patch code yet, so the throw would end the process; apply this fix with a restart", name)}
			}
		}
	}
	return nil
}
