package unwind

import "fmt"

// section is one section of call frame information: .eh_frame (the layout
// of the LSB, with pointer encodings) or .debug_frame (DWARF 6.4.1).
type section struct {
	name  string
	data  []byte
	addr  uint64 // link-time address of data[0]; 0 for .debug_frame
	debug bool   // .debug_frame layout: all-ones CIE id, absolute CIE offsets

	// untilZero ends the section at the first zero terminator: set for an
	// .eh_frame found through PT_GNU_EH_FRAME, whose size is not known.
	untilZero bool

	cies map[int]*cie // parsed CIEs by offset; complete once Load returns
}

func (s *section) errorf(off int, format string, args ...any) error {
	return &FormatError{Section: s.name, Offset: int64(off), Reason: fmt.Sprintf(format, args...)}
}

// entry is the header of one CIE or FDE.
type entry struct {
	start      int  // offset of the length field
	body       int  // offset just after the CIE id or CIE pointer
	end        int  // offset of the next entry
	terminator bool // a zero length field: 4 bytes and nothing else
	isCIE      bool
	cie        int // FDE only: offset of its CIE
}

// entryAt decodes the header of the entry at off.
func (s *section) entryAt(off int) (entry, error) {
	b := newBuf(s, off, len(s.data))
	e := entry{start: off}
	length := uint64(b.u32())
	if b.err != nil {
		return e, b.err
	}
	if length == 0 {
		e.terminator = true
		e.end = b.pos()
		return e, nil
	}
	idSize := 4
	switch {
	case length == 0xffffffff:
		length = b.u64()
		idSize = 8
	case length >= 0xfffffff0:
		return e, s.errorf(off, "reserved length value %#x", length)
	}
	if b.err != nil {
		return e, b.err
	}
	if length > uint64(b.left()) {
		return e, s.errorf(off, "entry of %d bytes overruns the section (%d bytes left)", length, b.left())
	}
	if length < uint64(idSize) {
		return e, s.errorf(off, "entry of %d bytes is too short", length)
	}
	e.end = b.pos() + int(length)
	idPos := b.pos()
	var id uint64
	if idSize == 4 {
		id = uint64(b.u32())
	} else {
		id = b.u64()
	}
	e.body = b.pos()
	if s.debug {
		if idSize == 4 && id == 0xffffffff || idSize == 8 && id == ^uint64(0) {
			e.isCIE = true
			return e, nil
		}
		if id >= uint64(len(s.data)) {
			return e, s.errorf(off, "FDE points to a CIE at %#x, outside the section", id)
		}
		e.cie = int(id)
		return e, nil
	}
	if id == 0 {
		e.isCIE = true
		return e, nil
	}
	if id > uint64(idPos) {
		return e, s.errorf(off, "FDE points to a CIE %#x bytes back, before the section", id)
	}
	e.cie = idPos - int(id)
	return e, nil
}

// cie is a parsed Common Information Entry.
type cie struct {
	codeAlign uint64
	dataAlign int64
	raReg     int  // the return address column
	fdeEnc    byte // encoding of the FDEs' addresses
	augData   bool // 'z': FDEs have augmentation data
	signal    bool // 'S': the FDEs describe signal frames
	initial   row  // the rules after the initial instructions
	// initInstr are the initial instructions as they are in the section
	// (with any padding), for Extract.
	initInstr []byte
}

// cieAt returns the CIE at off, parsing it the first time.
func (s *section) cieAt(off int, sc *scratch) (*cie, error) {
	if c, ok := s.cies[off]; ok {
		return c, nil
	}
	if sc == nil {
		// Only Load parses; after it every CIE that an FDE uses is known.
		return nil, s.errorf(off, "no CIE here")
	}
	e, err := s.entryAt(off)
	if err != nil {
		return nil, err
	}
	if !e.isCIE || e.terminator {
		return nil, s.errorf(off, "an FDE points here, but this is not a CIE")
	}
	c, err := s.parseCIE(e, sc)
	if err != nil {
		return nil, err
	}
	s.cies[off] = c
	return c, nil
}

func (s *section) parseCIE(e entry, sc *scratch) (*cie, error) {
	b := newBuf(s, e.body, e.end)
	c := &cie{fdeEnc: peAbsptr}
	version := b.u8()
	if b.err != nil {
		return nil, b.err
	}
	switch {
	case version == 1, version == 3:
	case version == 4 && s.debug:
	default:
		return nil, s.errorf(e.start, "CIE version %d is not supported", version)
	}
	aug := b.cstring()
	if version == 4 {
		addrSize, segSize := b.u8(), b.u8()
		if b.err == nil && (addrSize != 8 || segSize != 0) {
			return nil, s.errorf(e.start, "CIE with %d-byte addresses and %d-byte segments; only 8 and 0 are supported", addrSize, segSize)
		}
	}
	c.codeAlign = b.uleb()
	c.dataAlign = b.sleb()
	var ra uint64
	if version == 1 {
		ra = uint64(b.u8())
	} else {
		ra = b.uleb()
	}
	if b.err != nil {
		return nil, b.err
	}
	if ra >= numRegs {
		return nil, s.errorf(e.start, "return address column %d is not an x86-64 register this unwinder knows", ra)
	}
	c.raReg = int(ra)
	if aug != "" {
		if aug[0] != 'z' {
			return nil, s.errorf(e.start, "augmentation %q is not supported", aug)
		}
		c.augData = true
		n := b.uleb()
		start := b.pos()
		data := b.bytes(n)
		if b.err != nil {
			return nil, b.err
		}
		a := buf{sec: s, data: data, base: start}
	chars:
		for _, ch := range aug[1:] {
			switch ch {
			case 'L':
				if err := a.encoding(false); err != nil {
					return nil, err
				}
			case 'P':
				enc := a.u8()
				if a.err == nil {
					if err := checkEncoding(enc, true); err != nil || enc == peOmit {
						return nil, s.errorf(start, "personality encoding %#x: %v", enc, err)
					}
				}
				a.value(enc) // the personality routine: not needed to unwind
			case 'R':
				enc := a.u8()
				if a.err == nil {
					if err := checkEncoding(enc, false); err != nil || enc == peOmit {
						return nil, s.errorf(start, "FDE address encoding %#x: %v", enc, err)
					}
				}
				c.fdeEnc = enc
			case 'S':
				c.signal = true
			default:
				// An augmentation this unwinder does not know: its data,
				// if any, is covered by the length, and it does not change
				// how frames are unwound (the 'B' and 'G' of other ABIs).
				break chars
			}
			if a.err != nil {
				return nil, a.err
			}
		}
	}
	if s.debug && c.fdeEnc != peAbsptr {
		return nil, s.errorf(e.start, "pointer encoding %#x in .debug_frame", c.fdeEnc)
	}
	c.initial = row{}
	p := program{sec: s, cie: c}
	ib := buf{sec: s, data: b.data[b.off:], base: b.pos()}
	c.initInstr = ib.data
	if err := p.run(&ib, &c.initial, 0, ^uint64(0), sc, true); err != nil {
		return nil, err
	}
	return c, nil
}

// encoding reads an encoding byte (of an LSDA pointer, say) and checks it.
func (b *buf) encoding(indirectOK bool) error {
	at := b.pos()
	enc := b.u8()
	if b.err != nil {
		return b.err
	}
	if err := checkEncoding(enc, indirectOK); err != nil {
		return b.sec.errorf(at, "%v", err)
	}
	return nil
}

// fde is a parsed Frame Description Entry.
type fde struct {
	sec        *section
	cie        *cie
	start      int // section offset of the entry
	begin, end uint64
	instr      buf // the call frame instructions
}

// fdeAt parses the FDE whose entry is e. sc is non-nil only while loading,
// when CIEs may still need parsing.
func (s *section) fdeAt(e entry, sc *scratch) (fde, error) {
	f := fde{sec: s, start: e.start}
	c, err := s.cieAt(e.cie, sc)
	if err != nil {
		return f, err
	}
	f.cie = c
	b := newBuf(s, e.body, e.end)
	f.begin = b.pointer(c.fdeEnc, 0, false)
	length := b.value(c.fdeEnc)
	if c.augData {
		b.bytes(b.uleb()) // the LSDA pointer: not needed to unwind
	}
	if b.err != nil {
		return f, b.err
	}
	f.end = f.begin + length
	if f.end < f.begin {
		return f, s.errorf(e.start, "FDE range %#x+%#x overflows", f.begin, length)
	}
	f.instr = buf{sec: s, data: b.data[b.off:], base: b.pos()}
	return f, nil
}
