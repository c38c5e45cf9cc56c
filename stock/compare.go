package stock

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// NotReproducibleError reports a rebuild whose loaded bytes differ from the
// installed file: the rebuild is not the program that runs, so no patch may
// be built from it.
type NotReproducibleError struct {
	Installed, Rebuilt string
	// Section is the section of the installed file that holds the first
	// differing byte ("" when the difference is in the program headers).
	Section string
	// Addr is the link-time address of the first differing byte.
	Addr uint64
	// Why says what differs in words.
	Why string
	// Cause is the likely reason in words ("" when none is seen): a
	// section that grew, a build date or a build path compiled in.
	Cause string
}

// shortWhy is the difference and its cause, without the file names.
func (e *NotReproducibleError) shortWhy() string {
	if e.Cause != "" {
		return e.Cause
	}
	return e.Why
}

func (e *NotReproducibleError) Error() string {
	where := e.Section
	if where == "" {
		where = "the program headers"
	}
	cause := ""
	if e.Cause != "" {
		cause = "; " + e.Cause
	}
	return fmt.Sprintf("the rebuild %s is not the installed %s: it differs in %s (%s, first at 0x%x)%s",
		e.Rebuilt, e.Installed, where, e.Why, e.Addr, cause)
}

// Proof is what Compare found when the rebuild is the installed file.
type Proof struct {
	// Segments is the number of loadable segments compared, Bytes their
	// total size in the file.
	Segments int
	Bytes    uint64
	// Ignored lists what was allowed to differ, in words: the build-id note
	// (it hashes the whole file, relocation sections included), the ELF
	// header's section header fields, and the order of the dynamic
	// linker's tables (kept relocation sections renumber sections and can
	// change the order the linker emits dynamic symbols in).
	Ignored []string
	// InstalledBuildID is the build-id of the installed file, the one a
	// patch must name to match the running program.
	InstalledBuildID []byte
}

// Compare proves that rebuilt has, byte for byte, the loaded contents of
// installed: the same program headers and the same bytes in every PT_LOAD
// segment, except the build-id note's descriptor and the section index of
// .dynsym entries (compared by the name of the section they point to). Any
// other difference is a *NotReproducibleError naming the first differing
// section of the installed file.
func Compare(installed, rebuilt string) (*Proof, error) {
	a, err := openELF(installed)
	if err != nil {
		return nil, err
	}
	defer a.close()
	b, err := openELF(rebuilt)
	if err != nil {
		return nil, err
	}
	defer b.close()
	fail := func(addr uint64, why string) error {
		e := &NotReproducibleError{Installed: installed, Rebuilt: rebuilt, Section: a.sectionAt(addr), Addr: addr, Why: why}
		e.Cause = explain(a, b, addr)
		return e
	}
	if a.f.Machine != b.f.Machine || a.f.Type != b.f.Type || a.f.Class != b.f.Class {
		return nil, fail(0, fmt.Sprintf("the ELF header: %v %v against %v %v", a.f.Type, a.f.Machine, b.f.Type, b.f.Machine))
	}
	la, lb := a.loads(), b.loads()
	if len(la) != len(lb) {
		return nil, fail(0, fmt.Sprintf("%d loadable segments against %d", len(la), len(lb)))
	}
	proof := &Proof{InstalledBuildID: a.buildID}
	if len(a.buildID) > 0 {
		proof.Ignored = append(proof.Ignored, "the build-id note")
	}
	mask := newMask()
	a.maskBuildID(mask)
	b.maskBuildID(mask)
	if a.maskSectionHeaderFields(mask) {
		proof.Ignored = append(proof.Ignored, "where the ELF header says the section headers are (e_shoff, e_shnum, e_shstrndx)")
	}
	dynDiffers := map[string]bool{}
	for i := range la {
		pa, pb := la[i], lb[i]
		if pa.Vaddr != pb.Vaddr || pa.Filesz != pb.Filesz || pa.Memsz != pb.Memsz || pa.Flags != pb.Flags || pa.Off != pb.Off {
			return nil, fail(pa.Vaddr, fmt.Sprintf("segment %d is at 0x%x+0x%x (%v) in the installed file and 0x%x+0x%x (%v) in the rebuild",
				i, pa.Vaddr, pa.Filesz, pa.Flags, pb.Vaddr, pb.Filesz, pb.Flags))
		}
		da, err := readSeg(a.r, pa)
		if err != nil {
			return nil, fmt.Errorf("stock: read %s: %w", installed, err)
		}
		db, err := readSeg(b.r, pb)
		if err != nil {
			return nil, fmt.Errorf("stock: read %s: %w", rebuilt, err)
		}
		proof.Segments++
		proof.Bytes += pa.Filesz
		for off := 0; off < len(da); {
			n := firstDiff(da[off:], db[off:])
			if n < 0 {
				break
			}
			addr := pa.Vaddr + uint64(off+n)
			if mask.covers(addr) {
				off += n + 1
				continue
			}
			if sec := a.dynMetaAt(addr); sec != nil {
				// Symbol tables of the dynamic linker: kept relocations
				// can change the order in which the linker emits the
				// symbols. Compared by meaning below; skip the section.
				if o := b.f.Section(sec.Name); o == nil || o.Addr != sec.Addr || o.Size != sec.Size {
					return nil, fail(addr, fmt.Sprintf("section %s is not at the same place and size in the rebuild", sec.Name))
				}
				dynDiffers[sec.Name] = true
				off = int(sec.Addr + sec.Size - pa.Vaddr)
				continue
			}
			return nil, fail(addr, fmt.Sprintf("byte 0x%02x in the installed file, 0x%02x in the rebuild", da[off+n], db[off+n]))
		}
	}
	if len(dynDiffers) > 0 {
		if err := sameDynamic(a, b); err != nil {
			return nil, &NotReproducibleError{Installed: installed, Rebuilt: rebuilt, Section: ".dynsym", Why: err.Error()}
		}
		var names []string
		for n := range dynDiffers {
			names = append(names, n)
		}
		sort.Strings(names)
		proof.Ignored = append(proof.Ignored, "the order of the dynamic linker's tables ("+strings.Join(names, ", ")+"): the same dynamic symbols and relocations, compared by name")
	}
	return proof, nil
}

func readSeg(r io.ReaderAt, p *elf.Prog) ([]byte, error) {
	buf := make([]byte, p.Filesz)
	if _, err := r.ReadAt(buf, int64(p.Off)); err != nil {
		return nil, err
	}
	return buf, nil
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

type elfFile struct {
	file    *os.File
	f       *elf.File
	r       io.ReaderAt
	buildID []byte
	// buildIDAt is the link-time address of the build-id descriptor.
	buildIDAt uint64
}

func openELF(path string) (*elfFile, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("stock: %w", err)
	}
	f, err := elf.NewFile(file)
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("stock: %s is not an ELF file: %w", path, err)
	}
	e := &elfFile{file: file, f: f, r: file}
	if err := e.readBuildID(); err != nil {
		file.Close()
		return nil, fmt.Errorf("stock: %s: %w", path, err)
	}
	return e, nil
}

func (e *elfFile) close() { e.file.Close() }

func (e *elfFile) loads() []*elf.Prog {
	var out []*elf.Prog
	for _, p := range e.f.Progs {
		if p.Type == elf.PT_LOAD {
			out = append(out, p)
		}
	}
	return out
}

// readBuildID finds the NT_GNU_BUILD_ID note in the PT_NOTE segments (which
// a stripped file keeps) and where its descriptor lies.
func (e *elfFile) readBuildID() error {
	for _, p := range e.f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := e.r.ReadAt(data, int64(p.Off)); err != nil {
			return err
		}
		align := uint64(4)
		if p.Align == 8 {
			align = 8
		}
		for off := uint64(0); off+12 <= uint64(len(data)); {
			namesz := uint64(binary.LittleEndian.Uint32(data[off:]))
			descsz := uint64(binary.LittleEndian.Uint32(data[off+4:]))
			typ := binary.LittleEndian.Uint32(data[off+8:])
			// Offsets are aligned within the segment: a name of 4 bytes
			// after the 12-byte header needs no padding even in an
			// 8-aligned .note.gnu.property.
			name := off + 12
			desc := alignUp(name+namesz, align)
			end := alignUp(desc+descsz, align)
			if desc+descsz > uint64(len(data)) || end < desc {
				return errors.New("malformed note segment")
			}
			if typ == 3 && namesz == 4 && string(data[name:name+3]) == "GNU" {
				e.buildID = append([]byte(nil), data[desc:desc+descsz]...)
				e.buildIDAt = p.Vaddr + desc
				return nil
			}
			off = end
		}
	}
	return nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

func (e *elfFile) maskBuildID(m *mask) {
	if e.buildID != nil {
		m.add(e.buildIDAt, uint64(len(e.buildID)))
	}
}

// maskSectionHeaderFields allows the ELF header's section header fields to
// differ where the header is loaded: the loader never reads them, and kept
// relocation sections (and stripping) change them.
func (e *elfFile) maskSectionHeaderFields(m *mask) bool {
	if e.f.Class != elf.ELFCLASS64 {
		return false
	}
	for _, p := range e.loads() {
		if p.Off == 0 && p.Filesz >= 64 {
			m.add(p.Vaddr+0x28, 8) // e_shoff
			m.add(p.Vaddr+0x3c, 4) // e_shnum, e_shstrndx
			return true
		}
	}
	return false
}

// sectionAt names the allocated section of the file that holds addr.
func (e *elfFile) sectionAt(addr uint64) string {
	for _, s := range e.f.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && addr >= s.Addr && addr < s.Addr+s.Size {
			return s.Name
		}
	}
	return ""
}

// mask is a small set of address ranges allowed to differ.
type mask struct{ ranges [][2]uint64 }

func newMask() *mask { return &mask{} }

func (m *mask) add(start, size uint64) { m.ranges = append(m.ranges, [2]uint64{start, start + size}) }

func (m *mask) covers(addr uint64) bool {
	for _, r := range m.ranges {
		if addr >= r[0] && addr < r[1] {
			return true
		}
	}
	return false
}

var (
	looksLikeDate = regexp.MustCompile(`(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 0-3][0-9] (19|20)[0-9][0-9]|[0-2][0-9]:[0-5][0-9]:[0-5][0-9]|(19|20)[0-9][0-9]-[01][0-9]-[0-3][0-9]`)
	looksLikePath = regexp.MustCompile(`(^|[^A-Za-z0-9])/(build|tmp|home|root|usr/src|var/tmp|<<PKGBUILDDIR>>)/`)
)

// explain names the likely cause of a difference at addr (an address of
// the installed file): the first allocated section whose size differs
// (the layout changed: the rebuild compiled other code or data), or a
// build date or build path in the differing bytes.
func explain(a, b *elfFile, addr uint64) string {
	secs := func(e *elfFile) map[string]*elf.Section {
		out := map[string]*elf.Section{}
		for _, s := range e.f.Sections {
			if s.Flags&elf.SHF_ALLOC != 0 {
				out[s.Name] = s
			}
		}
		return out
	}
	sb := secs(b)
	var grown []string
	for _, s := range a.f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Name == ".note.gnu.build-id" {
			continue
		}
		o := sb[s.Name]
		switch {
		case o == nil:
			grown = append(grown, fmt.Sprintf("section %s is missing from the rebuild", s.Name))
		case o.Size != s.Size:
			grown = append(grown, fmt.Sprintf("section %s is %d bytes in the installed file and %d in the rebuild", s.Name, s.Size, o.Size))
		}
		if len(grown) > 0 {
			break
		}
	}
	if len(grown) > 0 {
		return grown[0] + ": the rebuild compiled other code or data (a configure check or build dependency that found something else, or another compiler)"
	}
	for _, e := range []*elfFile{a, b} {
		sec := e.f.Section(a.sectionAt(addr))
		if sec == nil || sec.Type == elf.SHT_NOBITS || addr < sec.Addr {
			continue
		}
		data, err := sec.Data()
		if err != nil || addr-sec.Addr >= uint64(len(data)) {
			continue
		}
		// The C string around the first differing byte.
		i := int(addr - sec.Addr)
		lo, hi := i, i
		for lo > 0 && lo > i-256 && data[lo-1] >= 0x20 && data[lo-1] < 0x7f {
			lo--
		}
		for hi < len(data) && hi < i+256 && data[hi] >= 0x20 && data[hi] < 0x7f {
			hi++
		}
		str := string(data[lo:hi])
		switch {
		case looksLikeDate.MatchString(str):
			return fmt.Sprintf("%q looks like a build date or time compiled in (__DATE__, __TIME__ or the build's own clock)", str)
		case looksLikePath.MatchString(str):
			return fmt.Sprintf("%q looks like a build path compiled in (__FILE__ or a configured directory)", str)
		}
	}
	return ""
}
