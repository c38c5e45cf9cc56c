package unwind

import (
	"debug/elf"
	"fmt"
	"io"
	"sort"
)

// Table is the call frame information of one ELF file: its .eh_frame,
// looked up through the binary search table of .eh_frame_hdr when there is
// one, and its .debug_frame for addresses .eh_frame does not cover. It is
// read-only once Load returns, and safe for concurrent use.
type Table struct {
	eh  *section // nil if the file has no .eh_frame
	dbg *section // nil if the file has no .debug_frame
	hdr *hdrTable

	// Sorted FDE ranges: ehIndex when .eh_frame_hdr is missing or does not
	// cover every FDE, dbgIndex always.
	ehIndex  []fdeRange
	dbgIndex []fdeRange
}

// fdeRange is the address range of one FDE and where it is.
type fdeRange struct {
	begin, end uint64
	off        int
}

// hdrTable is the binary search table of .eh_frame_hdr: count pairs of
// (initial location, FDE address), each value size bytes encoded with enc.
type hdrTable struct {
	data  []byte
	count int
	enc   byte
	size  int
	base  uint64 // added to the values: the section's address if datarel
}

// maxSection bounds the size of a section Load reads.
const maxSection = 1 << 30

// Load reads the call frame information of a linked x86-64 ELF file
// (executable, shared library, vdso): from its section headers, or, when it
// has none (an image read from memory may not), through its
// PT_GNU_EH_FRAME program header. It parses and checks
// all of it: malformed or unsupported information is a *FormatError. A
// file with no call frame information gives an empty Table.
func Load(f *elf.File) (*Table, error) {
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("%w: %v %v %v file; only 64-bit little-endian x86-64 is", ErrNotSupported, f.Class, f.Data, f.Machine)
	}
	if f.Type == elf.ET_REL {
		return nil, fmt.Errorf("%w: relocatable object (its call frame information is not relocated yet); load the linked file", ErrNotSupported)
	}
	var in sections
	var err error
	read := func(name string) ([]byte, uint64) {
		s := f.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS || err != nil {
			return nil, 0
		}
		if s.Size > maxSection {
			err = fmt.Errorf("unwind: section %s of %d bytes is too large", name, s.Size)
			return nil, 0
		}
		var data []byte
		if data, err = s.Data(); err != nil {
			err = fmt.Errorf("unwind: reading %s: %w", name, err)
		}
		return data, s.Addr
	}
	in.eh, in.ehAddr = read(".eh_frame")
	in.hdr, in.hdrAddr = read(".eh_frame_hdr")
	in.debug, _ = read(".debug_frame")
	if err != nil {
		return nil, err
	}
	if len(f.Sections) == 0 {
		// An image without section headers, as read from memory.
		if err := fromSegments(f, &in); err != nil {
			return nil, err
		}
	}
	return newTable(in)
}

// sections is the raw call frame information of a file.
type sections struct {
	eh        []byte
	ehAddr    uint64
	untilZero bool // eh is the rest of a segment and ends at a terminator
	hdr       []byte
	hdrAddr   uint64
	debug     []byte
}

// fromSegments finds .eh_frame_hdr and .eh_frame through the program
// headers of a file without section headers.
func fromSegments(f *elf.File, in *sections) error {
	var hdr *elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_GNU_EH_FRAME {
			hdr = p
		}
	}
	if hdr == nil {
		return nil
	}
	readProg := func(p *elf.Prog, off uint64) ([]byte, error) {
		if p.Filesz > maxSection || off > p.Filesz {
			return nil, fmt.Errorf("unwind: segment at %#x of %d bytes: bad size", p.Vaddr, p.Filesz)
		}
		data := make([]byte, p.Filesz-off)
		if _, err := p.ReadAt(data, int64(off)); err != nil && err != io.EOF {
			return nil, fmt.Errorf("unwind: reading the segment at %#x: %w", p.Vaddr, err)
		}
		return data, nil
	}
	data, err := readProg(hdr, 0)
	if err != nil {
		return err
	}
	hs := &section{name: ".eh_frame_hdr", data: data, addr: hdr.Vaddr}
	ehAddr, err := hs.ehFramePtr()
	if err != nil {
		return err
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && ehAddr >= p.Vaddr && ehAddr-p.Vaddr < p.Filesz {
			eh, err := readProg(p, ehAddr-p.Vaddr)
			if err != nil {
				return err
			}
			in.hdr, in.hdrAddr = data, hdr.Vaddr
			in.eh, in.ehAddr, in.untilZero = eh, ehAddr, true
			return nil
		}
	}
	return hs.errorf(4, "eh_frame_ptr %#x is in no loadable segment", ehAddr)
}

// newTable parses and checks raw call frame information.
func newTable(in sections) (*Table, error) {
	t := &Table{}
	sc := &scratch{}
	var ehAll []fdeRange // every .eh_frame FDE, in section order
	if in.eh != nil {
		t.eh = &section{name: ".eh_frame", data: in.eh, addr: in.ehAddr, untilZero: in.untilZero, cies: map[int]*cie{}}
		var err error
		if ehAll, err = t.eh.scan(sc); err != nil {
			return nil, err
		}
	}
	if in.debug != nil {
		t.dbg = &section{name: ".debug_frame", data: in.debug, debug: true, cies: map[int]*cie{}}
		all, err := t.dbg.scan(sc)
		if err != nil {
			return nil, err
		}
		t.dbgIndex = sortedIndex(all)
	}
	if t.eh != nil && in.hdr != nil {
		hs := &section{name: ".eh_frame_hdr", data: in.hdr, addr: in.hdrAddr}
		h, err := hs.parseHdr(t.eh, ehAll)
		if err != nil {
			return nil, err
		}
		t.hdr = h
	}
	if t.eh != nil && t.hdr == nil {
		t.ehIndex = sortedIndex(ehAll)
	}
	return t, nil
}

// sortedIndex returns the FDEs that cover some code, by address.
func sortedIndex(all []fdeRange) []fdeRange {
	var idx []fdeRange
	for _, r := range all {
		if r.begin < r.end {
			idx = append(idx, r)
		}
	}
	sort.SliceStable(idx, func(i, j int) bool { return idx[i].begin < idx[j].begin })
	return idx
}

// scan parses every entry of the section, checks its instructions by
// running them to the end, and returns the FDEs in section order.
func (s *section) scan(sc *scratch) ([]fdeRange, error) {
	var all []fdeRange
	for off := 0; off < len(s.data); {
		e, err := s.entryAt(off)
		if err != nil {
			if s.untilZero {
				// The segment may end before a terminator; what was read
				// is complete entries.
				break
			}
			return nil, err
		}
		off = e.end
		switch {
		case e.terminator:
			if s.untilZero {
				return all, nil
			}
		case e.isCIE:
			if _, err := s.cieAt(e.start, sc); err != nil {
				return nil, err
			}
		default:
			f, err := s.fdeAt(e, sc)
			if err != nil {
				return nil, err
			}
			p := program{sec: s, cie: f.cie, initial: &f.cie.initial}
			r := f.cie.initial
			if err := p.run(&f.instr, &r, f.begin, ^uint64(0), sc, true); err != nil {
				return nil, err
			}
			all = append(all, fdeRange{begin: f.begin, end: f.end, off: e.start})
		}
	}
	return all, nil
}

// ehFramePtr reads the version and the eh_frame_ptr of .eh_frame_hdr.
func (s *section) ehFramePtr() (uint64, error) {
	b := newBuf(s, 0, len(s.data))
	if v := b.u8(); b.err == nil && v != 1 {
		return 0, s.errorf(0, "version %d is not supported", v)
	}
	enc := b.u8()
	b.u8()
	b.u8()
	if b.err != nil {
		return 0, b.err
	}
	if err := checkEncoding(enc, false); err != nil || enc == peOmit {
		return 0, s.errorf(1, "eh_frame_ptr encoding %#x: %v", enc, err)
	}
	p := b.pointer(enc, s.addr, true)
	return p, b.err
}

// parseHdr checks .eh_frame_hdr against the FDEs of .eh_frame and returns
// its table, or nil if it has none, or one that leaves some FDE out.
func (s *section) parseHdr(eh *section, all []fdeRange) (*hdrTable, error) {
	ehAddr, err := s.ehFramePtr()
	if err != nil {
		return nil, err
	}
	if ehAddr != eh.addr {
		return nil, s.errorf(4, "eh_frame_ptr is %#x, but .eh_frame is at %#x", ehAddr, eh.addr)
	}
	countEnc, tableEnc := s.data[2], s.data[3]
	if countEnc == peOmit || tableEnc == peOmit {
		return nil, nil
	}
	b := newBuf(s, 4, len(s.data))
	b.value(s.data[1]) // eh_frame_ptr, read above
	if err := checkEncoding(countEnc, false); err != nil {
		return nil, s.errorf(2, "fde_count encoding: %v", err)
	}
	count := b.pointer(countEnc, s.addr, true)
	if b.err != nil {
		return nil, b.err
	}
	if err := checkEncoding(tableEnc, false); err != nil {
		return nil, s.errorf(3, "table encoding: %v", err)
	}
	size := encodedSize(tableEnc)
	if size == 0 || tableEnc&0x70 == pePcrel {
		return nil, nil // not binary-searchable in place: use our own index
	}
	if count > uint64(b.left()/(2*size)) {
		return nil, s.errorf(b.pos(), "table of %d entries overruns the section", count)
	}
	h := &hdrTable{data: b.data[b.off : b.off+int(count)*2*size], count: int(count), enc: tableEnc, size: size}
	if tableEnc&0x70 == peDatarel {
		h.base = s.addr
	}
	// Every entry must name an FDE by its start and initial location, in
	// increasing order; every FDE that covers code must be in the table.
	byOff := make(map[int]int, len(all)) // FDE offset -> index in all
	for i, r := range all {
		byOff[r.off] = i
	}
	seen := make([]bool, len(all))
	var prev uint64
	for i := range h.count {
		loc, addr := h.entry(i)
		at := b.pos() + i*2*size
		if i > 0 && loc < prev {
			return nil, s.errorf(at, "table not sorted: %#x after %#x", loc, prev)
		}
		prev = loc
		j, ok := -1, false
		if addr >= eh.addr && addr-eh.addr < uint64(len(eh.data)) {
			j, ok = byOff[int(addr-eh.addr)]
		}
		if !ok {
			return nil, s.errorf(at, "entry points to %#x, which is not an FDE in .eh_frame", addr)
		}
		if all[j].begin != loc {
			return nil, s.errorf(at, "entry says the FDE at %#x starts at %#x, the FDE says %#x", addr, loc, all[j].begin)
		}
		seen[j] = true
	}
	for j, r := range all {
		if !seen[j] && r.begin < r.end {
			return nil, nil
		}
	}
	return h, nil
}

// entry decodes entry i of the table.
func (h *hdrTable) entry(i int) (loc, addr uint64) {
	p := h.data[i*2*h.size:]
	return h.value(p) + h.base, h.value(p[h.size:]) + h.base
}

func (h *hdrTable) value(p []byte) uint64 {
	var v uint64
	for k := h.size - 1; k >= 0; k-- {
		v = v<<8 | uint64(p[k])
	}
	switch h.enc & 0x0f {
	case peSdata2:
		v = uint64(int64(int16(v)))
	case peSdata4:
		v = uint64(int64(int32(v)))
	}
	return v
}

// Range returns the code range [begin, end) of the FDE that covers pc, a
// link-time address; ok is false when no FDE covers it. A function that
// gcc compiled has an FDE of its own (its cold part another), so a range
// that begins at pc says a function begins there.
func (t *Table) Range(pc uint64) (begin, end uint64, ok bool, err error) {
	f, ok, err := t.find(pc)
	if !ok || err != nil {
		return 0, 0, false, err
	}
	return f.begin, f.end, true, nil
}

// find returns the FDE that covers pc, a link-time address: from
// .eh_frame, or else from .debug_frame.
func (t *Table) find(pc uint64) (fde, bool, error) {
	if f, ok, err := t.findEh(pc); ok || err != nil {
		return f, ok, err
	}
	return t.findDebug(pc)
}

func (t *Table) findEh(pc uint64) (fde, bool, error) {
	if t.eh == nil {
		return fde{}, false, nil
	}
	if t.hdr == nil {
		return t.eh.fdeCovering(lookup(t.ehIndex, pc), pc)
	}
	h := t.hdr
	i := sort.Search(h.count, func(i int) bool { loc, _ := h.entry(i); return loc > pc }) - 1
	if i < 0 {
		return fde{}, false, nil
	}
	_, addr := h.entry(i)
	return t.eh.fdeCovering(int(addr-t.eh.addr), pc)
}

func (t *Table) findDebug(pc uint64) (fde, bool, error) {
	if t.dbg == nil {
		return fde{}, false, nil
	}
	return t.dbg.fdeCovering(lookup(t.dbgIndex, pc), pc)
}

// lookup returns the offset of the last FDE in idx that begins at or
// before pc, or -1.
func lookup(idx []fdeRange, pc uint64) int {
	i := sort.Search(len(idx), func(i int) bool { return idx[i].begin > pc }) - 1
	if i < 0 {
		return -1
	}
	return idx[i].off
}

// fdeCovering parses the FDE at off (none if off is -1) and reports whether
// it covers pc.
func (s *section) fdeCovering(off int, pc uint64) (fde, bool, error) {
	if off < 0 {
		return fde{}, false, nil
	}
	e, err := s.entryAt(off)
	if err != nil {
		return fde{}, false, err
	}
	if e.isCIE || e.terminator {
		return fde{}, false, s.errorf(off, "expected an FDE")
	}
	f, err := s.fdeAt(e, nil)
	if err != nil {
		return fde{}, false, err
	}
	return f, pc >= f.begin && pc < f.end, nil
}
