package builder

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"sort"

	"golang.org/x/arch/x86/x86asm"

	"github.com/hotpatch/hotpatch/patch"
)

// insn is the position of one decoded instruction within a function.
type insn struct {
	off, len int
	pcrel    int  // width of a PC-relative field (0 if none)
	pcrelOff int  // offset of that field within the instruction
	indexed  bool // a memory operand with an index register (sym-8(,%rdx,8))
}

// decodeFunc decodes a function by linear sweep. gcc on x86-64 never puts
// data in .text, so every byte of a function belongs to an instruction.
func decodeFunc(name string, code []byte) ([]insn, error) {
	var out []insn
	for off := 0; off < len(code); {
		// endbr64/endbr32 are hint NOPs that the decoder does not know.
		if len(code)-off >= 4 && code[off] == 0xf3 && code[off+1] == 0x0f && code[off+2] == 0x1e && (code[off+3] == 0xfa || code[off+3] == 0xfb) {
			out = append(out, insn{off: off, len: 4})
			off += 4
			continue
		}
		in, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			return nil, &UnsupportedError{Function: name, Reason: fmt.Sprintf("cannot decode the instruction at offset %#x (% x): %v", off, code[off:min(off+8, len(code))], err)}
		}
		ix := false
		for _, a := range in.Args {
			if mem, ok := a.(x86asm.Mem); ok && mem.Index != 0 {
				ix = true
			}
		}
		out = append(out, insn{off: off, len: in.Len, pcrel: in.PCRel, pcrelOff: in.PCRelOff, indexed: ix})
		off += in.Len
	}
	return out, nil
}

// insnAt returns the instruction that holds byte off.
func insnAt(insns []insn, off int) *insn {
	lo, hi := 0, len(insns)
	for lo < hi {
		mid := (lo + hi) / 2
		if insns[mid].off+insns[mid].len <= off {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(insns) && insns[lo].off <= off {
		return &insns[lo]
	}
	return nil
}

// field is one relocated field of a function or data chunk, with the exact
// link-time address it refers to.
type field struct {
	off    uint64 // offset of the field in its function or chunk
	typ    patch.RelocType
	target uint64 // T: the address referred to (meaningless for external)
	addend int64  // A, so that the field's value is T+A (-P for PC32)
	r      reloc
	keep   bool // a link-time constant (thread-local offset) kept as it is
	tls    bool // keep depends on an unchanged thread-local layout
	ext    bool // refers to an undefined (external) symbol
	// indexed: the field is the displacement of a memory operand with an
	// index register, which may point before the object it indexes.
	indexed bool
}

func isTLSReloc(t elf.R_X86_64) bool {
	switch t {
	case elf.R_X86_64_TPOFF32, elf.R_X86_64_TPOFF64, elf.R_X86_64_GOTTPOFF,
		elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD, elf.R_X86_64_DTPOFF32, elf.R_X86_64_DTPOFF64,
		elf.R_X86_64_GOTPC32_TLSDESC, elf.R_X86_64_TLSDESC_CALL:
		return true
	}
	return false
}

func isPCReloc(t elf.R_X86_64) bool {
	switch t {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX,
		elf.R_X86_64_REX_GOTPCRELX, elf.R_X86_64_GOTTPOFF, elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD,
		elf.R_X86_64_GOTPC32_TLSDESC:
		return true
	}
	return false
}

// codeFields resolves every relocation of a function to an exact target,
// and every PC-relative operand that leaves the function without one (the
// assembler resolved it within the input section). loose is kept for
// findings that only matter for code that goes into a patch.
func (m *module) codeFields(fn *symbol) (fields []field, loose, err error) {
	code, ok := m.bytesAt(fn.addr, fn.size)
	if !ok {
		return nil, nil, &InputError{Path: m.path, Reason: fmt.Sprintf("function %s lies outside the file's sections", fn.display())}
	}
	insns, err := decodeFunc(fn.display(), code)
	if err != nil {
		return nil, nil, err
	}
	rels := m.relocsIn(fn.addr, fn.size)
	covered := map[int]bool{}
	var out []field
	for i, r := range rels {
		off := int(r.off - fn.addr)
		f := field{off: uint64(off), r: r}
		f.ext = r.sym != nil && !r.sym.defined() && r.sym.shndx != elf.SHN_ABS
		if r.typ == elf.R_X86_64_TLSDESC_CALL {
			// A marker on "call *(%rax)"; it has no field.
			f.keep, f.tls = true, true
			continue
		}
		in := insnAt(insns, off)
		if in == nil {
			return nil, nil, &UnsupportedError{Function: fn.display(), Reason: fmt.Sprintf("relocation at offset %#x is outside any instruction", off)}
		}
		covered[in.off] = true
		f.indexed = in.indexed
		end := uint64(in.off + in.len)
		pcField := in.pcrel == 4 && in.off+in.pcrelOff == off
		switch {
		case pcField && isPCReloc(r.typ):
			// The exact target comes from the final bytes, so linker
			// relaxations (GOT load turned into lea) are seen as they are.
			disp := int32(binary.LittleEndian.Uint32(code[off:]))
			f.typ = patch.PC32
			f.target = uint64(int64(fn.addr+end) + int64(disp))
			f.addend = int64(off) - int64(end)
		case r.typ == elf.R_X86_64_64:
			f.typ, f.target, f.addend = patch.Abs64, symValue(r), 0
		case r.typ == elf.R_X86_64_32:
			f.typ, f.target = patch.Abs32, symValue(r)
		case r.typ == elf.R_X86_64_32S:
			f.typ, f.target = patch.Abs32S, symValue(r)
		case isTLSReloc(r.typ):
			// Local-exec offsets, or a sequence the linker relaxed to one:
			// a constant that stays right while the TLS layout is unchanged.
			f.keep, f.tls = true, true
		case r.typ == elf.R_X86_64_PLT32 && r.sym != nil && (r.sym.base == "__tls_get_addr" || r.sym.base == "___tls_get_addr") && i > 0 && isTLSReloc(rels[i-1].typ):
			f.keep, f.tls = true, true // call replaced by the linker's TLS relaxation
		case r.typ == elf.R_X86_64_GOTPCRELX || r.typ == elf.R_X86_64_REX_GOTPCRELX:
			// Relaxed by the linker to an immediate (non-PIE "mov $sym, %reg").
			v := int32(binary.LittleEndian.Uint32(code[off:]))
			f.typ, f.target = patch.Abs32S, uint64(int64(v))
		default:
			return nil, nil, &UnsupportedError{Function: fn.display(), Reason: fmt.Sprintf("relocation %v at offset %#x in instruction at %#x is not supported", r.typ, off, in.off)}
		}
		out = append(out, f)
	}
	// A PC-relative operand without a relocation was resolved by the
	// assembler: its target is in the same input section. With
	// -ffunction-sections that is the function itself; without (stock
	// builds), it can be another function of the same file's .text, a call
	// to a static function for one. The final bytes give its exact target,
	// which is then bound like any relocated field.
	for _, in := range insns {
		if in.pcrel != 4 || covered[in.off] {
			continue
		}
		off := in.off + in.pcrelOff
		disp := int32(binary.LittleEndian.Uint32(code[off:]))
		end := int64(in.off + in.len)
		t := end + int64(disp)
		if t >= 0 && t < int64(fn.size) {
			continue
		}
		out = append(out, field{off: uint64(off), typ: patch.PC32, target: uint64(int64(fn.addr) + t), addend: int64(off) - end})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].off < out[j].off })
	return out, loose, nil
}

func symValue(r reloc) uint64 {
	if r.sym == nil {
		return uint64(r.addend)
	}
	return r.sym.addr + uint64(r.addend)
}

// dataFields resolves the relocations of a data chunk [start, end).
// Absolute fields refer to S+A. PC-relative fields in data are the entries
// of gcc's PIC jump tables, ".long .Lcase - .Ltable": they refer to code
// relative to the start of the table, which is where the chunk starts.
func (m *module) dataFields(start, end uint64, what string) ([]field, error) {
	var out []field
	for _, r := range m.relocsIn(start, end-start) {
		f := field{off: r.off - start, r: r}
		f.ext = r.sym != nil && !r.sym.defined() && r.sym.shndx != elf.SHN_ABS
		switch r.typ {
		case elf.R_X86_64_64:
			f.typ, f.target = patch.Abs64, symValue(r)
		case elf.R_X86_64_32:
			f.typ, f.target = patch.Abs32, symValue(r)
		case elf.R_X86_64_32S:
			f.typ, f.target = patch.Abs32S, symValue(r)
		case elf.R_X86_64_PC32:
			if f.ext {
				return nil, &UnsupportedError{Function: what, Reason: fmt.Sprintf("PC-relative reference to external %s in data", r.sym.name)}
			}
			// value = S+A-P = Lcase - Ltable, so Lcase = S+A - (P - start).
			f.typ = patch.PC32
			f.target = symValue(r) - (r.off - start)
			f.addend = int64(r.off - start)
		case elf.R_X86_64_DTPOFF64, elf.R_X86_64_DTPOFF32:
			f.keep, f.tls = true, true
		default:
			return nil, &UnsupportedError{Function: what, Reason: fmt.Sprintf("relocation %v in data at %#x is not supported", r.typ, r.off)}
		}
		out = append(out, f)
	}
	return out, nil
}
