// Package segcmp tells whether two ELF files load the same bytes: every
// PT_LOAD segment equal in address, size, flags and file contents, the
// build-id note aside. It is how a rebuild of a distribution package is
// proved to be a faithful stand-in for the installed, stripped binary
// (issue 14): stripping and kept relocations (--emit-relocs) change only
// sections that are not loaded.
package segcmp

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Result of a comparison.
type Result struct {
	// Identical: every loaded byte is equal, the build-id note aside.
	Identical bool
	// BuildIDDiffers: the build-id notes differ (expected of any rebuild
	// with other link inputs, e.g. --emit-relocs).
	BuildIDDiffers bool
	// ShndxDiffers counts dynamic symbols whose only difference is the
	// section index (st_shndx) of a defined symbol: section numbering is
	// not used at run time, and --emit-relocs shifts it by adding sections.
	ShndxDiffers int
	// When not identical: the first difference, in address order.
	Section string // the section of the first differing byte ("" if in no section)
	Addr    uint64 // its address
	Reason  string // what differs
}

func (r Result) String() string {
	switch {
	case r.Identical:
		var notes []string
		if r.BuildIDDiffers {
			notes = append(notes, "build-id differs")
		}
		if r.ShndxDiffers > 0 {
			notes = append(notes, fmt.Sprintf("%d dynamic symbols name another section index", r.ShndxDiffers))
		}
		if len(notes) == 0 {
			return "identical loaded segments"
		}
		return "identical loaded segments (" + strings.Join(notes, "; ") + ")"
	}
	return fmt.Sprintf("differs in %s at %#x: %s", r.Section, r.Addr, r.Reason)
}

// ErrNotELF is wrapped when a file cannot be read as ELF.
var ErrNotELF = errors.New("not an ELF file")

// Compare compares the loaded segments of the ELF files a and b.
func Compare(a, b string) (Result, error) {
	fa, err := elf.Open(a)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w: %v", a, ErrNotELF, err)
	}
	defer fa.Close()
	fb, err := elf.Open(b)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w: %v", b, ErrNotELF, err)
	}
	defer fb.Close()
	return CompareFiles(fa, fb)
}

// CompareFiles compares two opened ELF files.
func CompareFiles(fa, fb *elf.File) (Result, error) {
	var r Result
	la, lb := loads(fa), loads(fb)
	ida, idb := buildIDRange(fa), buildIDRange(fb)
	var skip []span
	skip, r.ShndxDiffers = shndxSpans(fa, fb)
	if na, nb := noteBytes(fa), noteBytes(fb); !bytes.Equal(na, nb) {
		r.BuildIDDiffers = true
	}
	if fa.Type != fb.Type || fa.Machine != fb.Machine {
		r.Reason = fmt.Sprintf("ELF type or machine: %v %v vs %v %v", fa.Type, fa.Machine, fb.Type, fb.Machine)
		return r, nil
	}
	if len(la) != len(lb) {
		r.Reason = fmt.Sprintf("%d loaded segments vs %d", len(la), len(lb))
		return r, nil
	}
	for i := range la {
		pa, pb := la[i], lb[i]
		if pa.Vaddr != pb.Vaddr || pa.Memsz != pb.Memsz || pa.Filesz != pb.Filesz || pa.Flags != pb.Flags {
			r.Addr = min(pa.Vaddr, pb.Vaddr)
			r.Section = sectionAt(fa, r.Addr)
			r.Reason = fmt.Sprintf("segment %d: vaddr %#x memsz %#x filesz %#x %v vs vaddr %#x memsz %#x filesz %#x %v",
				i, pa.Vaddr, pa.Memsz, pa.Filesz, pa.Flags, pb.Vaddr, pb.Memsz, pb.Filesz, pb.Flags)
			// The first differing byte tells more than the header: find it in the common part.
			if off, ok := firstDiff(pa, pb, ida, idb, skip); ok {
				r.Addr = pa.Vaddr + off
				r.Section = sectionAt(fa, r.Addr)
				r.Reason += fmt.Sprintf("; first differing byte at %#x", r.Addr)
			}
			return r, nil
		}
		if off, ok := firstDiff(pa, pb, ida, idb, skip); ok {
			r.Addr = pa.Vaddr + off
			r.Section = sectionAt(fa, r.Addr)
			r.Reason = fmt.Sprintf("byte at %#x (segment %d, offset %#x into section %s)", r.Addr, i, r.Addr-sectionAddr(fa, r.Section), r.Section)
			return r, nil
		}
	}
	r.Identical = true
	return r, nil
}

func loads(f *elf.File) []*elf.Prog {
	var l []*elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			l = append(l, p)
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].Vaddr < l[j].Vaddr })
	return l
}

type span struct{ lo, hi uint64 } // addresses

// buildIDRange is the address range of the .note.gnu.build-id descriptor.
func buildIDRange(f *elf.File) span {
	s := f.Section(".note.gnu.build-id")
	if s == nil || s.Size < 16 {
		return span{}
	}
	return span{s.Addr + 16, s.Addr + s.Size} // namesz, descsz, type, "GNU\0"
}

func noteBytes(f *elf.File) []byte {
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		return nil
	}
	b, _ := s.Data()
	return b
}

// firstDiff returns the offset of the first differing byte of two segments'
// file contents (over the shorter length; a length difference counts at its
// end), skipping the build-id descriptor.
func firstDiff(pa, pb *elf.Prog, ida, idb span, skip []span) (uint64, bool) {
	n := min(pa.Filesz, pb.Filesz)
	const chunk = 1 << 16
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	for off := uint64(0); off < n; off += chunk {
		k := min(chunk, n-off)
		if _, err := pa.ReadAt(ba[:k], int64(off)); err != nil {
			return off, true
		}
		if _, err := pb.ReadAt(bb[:k], int64(off)); err != nil {
			return off, true
		}
		if bytes.Equal(ba[:k], bb[:k]) {
			continue
		}
		for i := uint64(0); i < k; i++ {
			if ba[i] == bb[i] {
				continue
			}
			aa, ab := pa.Vaddr+off+i, pb.Vaddr+off+i
			if aa >= ida.lo && aa < ida.hi && ab >= idb.lo && ab < idb.hi {
				continue
			}
			if inSpans(aa, skip) {
				continue
			}
			if fo := pa.Off + off + i; pa.Off == 0 && pb.Off == 0 && (fo >= 0x28 && fo < 0x30 || fo >= 0x3a && fo < 0x40) {
				continue // e_shoff, e_shentsize, e_shnum, e_shstrndx: where the (unloaded) section headers are
			}
			return off + i, true
		}
	}
	if pa.Filesz != pb.Filesz {
		return n, true
	}
	return 0, false
}

func sectionAt(f *elf.File, addr uint64) string {
	if l := loads(f); len(l) > 0 && l[0].Off == 0 && addr >= l[0].Vaddr {
		switch o := addr - l[0].Vaddr; {
		case o < 64:
			return "ELF header"
		case o < 64+uint64(len(f.Progs))*56:
			return "program headers"
		}
	}
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && addr >= s.Addr && addr < s.Addr+max(s.Size, 1) && s.Type != elf.SHT_NULL {
			return s.Name
		}
	}
	return "(no section)"
}

func sectionAddr(f *elf.File, name string) uint64 {
	if s := f.Section(name); s != nil {
		return s.Addr
	}
	return 0
}

// shndxSpans returns the address ranges of the st_shndx fields of the
// dynamic symbols that differ only there, both naming an ordinary section
// (not undefined, absolute or common), when both files have .dynsym at the
// same place with the same size; and how many symbols that is.
func shndxSpans(fa, fb *elf.File) ([]span, int) {
	sa, sb := fa.Section(".dynsym"), fb.Section(".dynsym")
	if sa == nil || sb == nil || sa.Addr != sb.Addr || sa.Size != sb.Size || fa.Class != elf.ELFCLASS64 {
		return nil, 0
	}
	da, err1 := sa.Data()
	db, err2 := sb.Data()
	if err1 != nil || err2 != nil || len(da) != len(db) {
		return nil, 0
	}
	const entsize = 24 // Elf64_Sym
	ordinary := func(x uint16) bool { return x != uint16(elf.SHN_UNDEF) && x < uint16(elf.SHN_LORESERVE) }
	var spans []span
	for i := 0; i+entsize <= len(da); i += entsize {
		ea, eb := da[i:i+entsize], db[i:i+entsize]
		xa, xb := binary.LittleEndian.Uint16(ea[6:]), binary.LittleEndian.Uint16(eb[6:])
		if xa == xb || !ordinary(xa) || !ordinary(xb) {
			continue
		}
		if !bytes.Equal(ea[:6], eb[:6]) || !bytes.Equal(ea[8:], eb[8:]) {
			continue
		}
		lo := sa.Addr + uint64(i) + 6
		spans = append(spans, span{lo, lo + 2})
	}
	return spans, len(spans)
}

func inSpans(a uint64, spans []span) bool {
	i := sort.Search(len(spans), func(i int) bool { return spans[i].hi > a })
	return i < len(spans) && a >= spans[i].lo
}
