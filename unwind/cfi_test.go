package unwind

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// ehBuilder assembles an .eh_frame section at link-time address addr.
type ehBuilder struct {
	addr uint64
	b    []byte
}

func uleb(v uint64) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			c |= 0x80
		}
		out = append(out, c)
		if v == 0 {
			return out
		}
	}
}

func sleb(v int64) []byte {
	var out []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(out, c)
		}
		out = append(out, c|0x80)
	}
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// entry appends an entry with the given body (id and all).
func (e *ehBuilder) entry(body []byte) int {
	off := len(e.b)
	e.b = append(e.b, le32(uint32(len(body)))...)
	e.b = append(e.b, body...)
	return off
}

// stdCIE is what gcc's CIEs say: CFA = rsp+8, return address at CFA-8.
var stdCIE = []byte{cfaDefCFA, 7, 8, 0x80 | 16, 1}

// cie appends a version 1 CIE with code alignment 1, data alignment -8,
// return address column 16, augmentation aug (with "zR": pcrel sdata4).
func (e *ehBuilder) cie(aug string, instr ...byte) int {
	body := cat([]byte{0, 0, 0, 0, 1}, []byte(aug), []byte{0, 1, 0x78, 16})
	if strings.HasPrefix(aug, "z") {
		var data []byte
		for _, c := range aug[1:] {
			switch c {
			case 'R':
				data = append(data, peSdata4|pePcrel)
			case 'L':
				data = append(data, peSdata4|pePcrel)
			case 'P':
				data = append(data, peSdata4|pePcrel|peIndirect, 0, 0, 0, 0)
			}
		}
		body = cat(body, uleb(uint64(len(data))), data)
	}
	return e.entry(cat(body, instr))
}

// fde appends an FDE of a "zR" CIE for [begin, begin+size).
func (e *ehBuilder) fde(cie int, begin, size uint64, instr ...byte) int {
	off := len(e.b)
	field := e.addr + uint64(off+8)
	return e.entry(cat(le32(uint32(off+4-cie)), le32(uint32(begin-field)), le32(uint32(size)), []byte{0}, instr))
}

// instrAddr is the link-time address of the first instruction of an FDE
// appended next with fde.
func (e *ehBuilder) instrAddr() uint64 { return e.addr + uint64(len(e.b)+17) }

func (e *ehBuilder) table(t *testing.T) *Table {
	t.Helper()
	tab, err := newTable(sections{eh: e.b, ehAddr: e.addr})
	if err != nil {
		t.Fatalf("newTable: %v", err)
	}
	return tab
}

func (r rule) String() string {
	switch r.kind {
	case ruleUndefined:
		return "u"
	case ruleSameValue:
		return "s"
	case ruleOffset:
		return fmt.Sprintf("[cfa%+d]", r.off)
	case ruleValOffset:
		return fmt.Sprintf("cfa%+d", r.off)
	case ruleRegister:
		return fmt.Sprintf("r%d", r.reg)
	case ruleExpression:
		return fmt.Sprintf("[exp %x]", r.expr)
	case ruleValExpression:
		return fmt.Sprintf("exp %x", r.expr)
	}
	return "?"
}

func (r row) String() string {
	var parts []string
	switch r.cfa.kind {
	case cfaRegOffset:
		parts = append(parts, fmt.Sprintf("cfa=r%d%+d", r.cfa.reg, r.cfa.off))
	case cfaExpression:
		parts = append(parts, fmt.Sprintf("cfa=exp %x", r.cfa.expr))
	default:
		parts = append(parts, "cfa=?")
	}
	for i, rl := range r.regs {
		if rl.kind != ruleUnspecified {
			parts = append(parts, fmt.Sprintf("r%d=%v", i, rl))
		}
	}
	return strings.Join(parts, " ")
}

// rowAt returns the row for pc, a link-time address.
func rowAt(tab *Table, pc uint64) (string, error) {
	f, ok, err := tab.find(pc)
	if err != nil {
		return "", err
	}
	if !ok {
		return "no FDE", nil
	}
	r := f.cie.initial
	p := program{sec: f.sec, cie: f.cie, initial: &f.cie.initial}
	b := f.instr
	if err := p.run(&b, &r, f.begin, pc, &scratch{}, false); err != nil {
		return "", err
	}
	return r.String(), nil
}

const std = "r16=[cfa-8]"

// dwarfNames are the names of DWARF registers 0-16 (as readelf prints them).
var dwarfNames = []string{"rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "ra"}

func TestRows(t *testing.T) {
	t.Parallel()
	type at struct {
		pc   uint64
		want string
	}
	tests := []struct {
		name  string
		instr []byte
		rows  []at
	}{
		{"initial", nil, []at{{0x1000, "cfa=r7+8 " + std}, {0x10ff, "cfa=r7+8 " + std}, {0x1100, "no FDE"}, {0xfff, "no FDE"}}},
		{"push rbp; mov rbp, rsp", []byte{0x41, cfaDefCFAOffset, 16, 0x80 | 6, 2, 0x43, cfaDefCFARegister, 6}, []at{
			{0x1000, "cfa=r7+8 " + std},
			{0x1001, "cfa=r7+16 r6=[cfa-16] " + std},
			{0x1003, "cfa=r7+16 r6=[cfa-16] " + std},
			{0x1004, "cfa=r6+16 r6=[cfa-16] " + std},
		}},
		{"advance_loc1/2/4", []byte{cfaAdvanceLoc1, 0x10, cfaDefCFAOffset, 16, cfaAdvanceLoc2, 0x10, 0, cfaDefCFAOffset, 24, cfaAdvanceLoc4, 0x10, 0, 0, 0, cfaDefCFAOffset, 32}, []at{
			{0x100f, "cfa=r7+8 " + std}, {0x1010, "cfa=r7+16 " + std}, {0x1020, "cfa=r7+24 " + std}, {0x1030, "cfa=r7+32 " + std},
		}},
		{"remember_state/restore_state", []byte{0x41, cfaDefCFAOffset, 16, 0x80 | 3, 2, cfaRememberState, 0x41, cfaDefCFAOffset, 8, cfaRestore(3), 0x41, cfaRestoreState}, []at{
			{0x1001, "cfa=r7+16 r3=[cfa-16] " + std}, {0x1002, "cfa=r7+8 " + std}, {0x1003, "cfa=r7+16 r3=[cfa-16] " + std},
		}},
		{"restore_extended", []byte{cfaOffsetExtended, 16, 3, 0x41, cfaRestoreExtended, 16}, []at{
			{0x1000, "cfa=r7+8 r16=[cfa-24]"}, {0x1001, "cfa=r7+8 " + std},
		}},
		{"offset_extended_sf", []byte{cfaOffsetExtendedSf, 3, 0x7e}, []at{{0x1000, "cfa=r7+8 r3=[cfa+16] " + std}}},
		{"GNU_negative_offset_extended", []byte{cfaGNUNegOffsetExtended, 3, 2}, []at{{0x1000, "cfa=r7+8 r3=[cfa+16] " + std}}},
		{"undefined and same_value", []byte{cfaUndefined, 16, cfaSameValue, 3}, []at{{0x1000, "cfa=r7+8 r3=s r16=u"}}},
		{"register", []byte{cfaRegister, 3, 12}, []at{{0x1000, "cfa=r7+8 r3=r12 " + std}}},
		{"val_offset", []byte{cfaValOffset, 3, 2, cfaValOffsetSf, 12, 0x7f}, []at{{0x1000, "cfa=r7+8 r3=cfa-16 r12=cfa+8 " + std}}},
		{"def_cfa", []byte{cfaDefCFA, 6, 32}, []at{{0x1000, "cfa=r6+32 " + std}}},
		{"def_cfa_sf", []byte{cfaDefCFASf, 6, 0x7e}, []at{{0x1000, "cfa=r6+16 " + std}}},
		{"def_cfa_offset_sf", []byte{cfaDefCFAOffsetSf, 0x7c}, []at{{0x1000, "cfa=r7+32 " + std}}},
		{"def_cfa_expression", []byte{cfaDefCFAExpression, 3, 0x77, 8, opDeref}, []at{{0x1000, "cfa=exp 770806 " + std}}},
		{"expression", []byte{cfaExpressionOp, 3, 2, 0x77, 0x10}, []at{{0x1000, "cfa=r7+8 r3=[exp 7710] " + std}}},
		{"val_expression", []byte{cfaValExpression, 3, 1, opLit0 + 5}, []at{{0x1000, "cfa=r7+8 r3=exp 35 " + std}}},
		{"GNU_args_size and nop", []byte{cfaGNUArgsSize, 16, cfaNop, cfaNop}, []at{{0x1000, "cfa=r7+8 " + std}}},
		{"registers above 16 are ignored", []byte{cfaOffsetExtended, 17, 2, cfaUndefined, 49, cfaRestoreExtended, 33}, []at{{0x1000, "cfa=r7+8 " + std}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := &ehBuilder{addr: 0x2000}
			c := e.cie("zR", stdCIE...)
			e.fde(c, 0x1000, 0x100, tt.instr...)
			tab := e.table(t)
			for _, a := range tt.rows {
				got, err := rowAt(tab, a.pc)
				if err != nil {
					t.Fatalf("pc %#x: %v", a.pc, err)
				}
				if got != a.want {
					t.Errorf("pc %#x: row %q, want %q", a.pc, got, a.want)
				}
			}
		})
	}
}

func cfaRestore(reg byte) byte { return 0xc0 | reg }

func TestSetLoc(t *testing.T) {
	t.Parallel()
	e := &ehBuilder{addr: 0x2000}
	c := e.cie("zR", stdCIE...)
	field := e.instrAddr() + 1 // after the opcode
	e.fde(c, 0x1000, 0x100, cat([]byte{cfaSetLoc}, le32(uint32(0x1040-field)), []byte{cfaDefCFAOffset, 16})...)
	tab := e.table(t)
	for pc, want := range map[uint64]string{0x103f: "cfa=r7+8 " + std, 0x1040: "cfa=r7+16 " + std} {
		if got, err := rowAt(tab, pc); err != nil || got != want {
			t.Errorf("pc %#x: %q, %v; want %q", pc, got, err, want)
		}
	}
}

func TestAugmentations(t *testing.T) {
	t.Parallel()
	e := &ehBuilder{addr: 0x2000}
	zplr := e.cie("zPLR", stdCIE...)
	s := e.cie("zRS", stdCIE...)
	// An FDE of "zPLR" has an LSDA pointer in its augmentation data.
	off := len(e.b)
	field := e.addr + uint64(off+8)
	e.entry(cat(le32(uint32(off+4-zplr)), le32(uint32(0x1000-field)), le32(0x10), []byte{4, 0, 0, 0, 0, cfaDefCFAOffset, 16}))
	e.fde(s, 0x2000, 0x10)
	tab := e.table(t)
	f, ok, err := tab.find(0x1000)
	if err != nil || !ok || f.cie.signal {
		t.Errorf("zPLR FDE: %v %v signal=%v", ok, err, ok && f.cie.signal)
	}
	if got, _ := rowAt(tab, 0x1000); got != "cfa=r7+16 "+std {
		t.Errorf("zPLR row %q", got)
	}
	if f, ok, err := tab.find(0x2000); err != nil || !ok || !f.cie.signal {
		t.Errorf("zRS FDE: %v %v", ok, err)
	}
}

// TestLoadMalformed feeds broken call frame information to the parser.
func TestLoadMalformed(t *testing.T) {
	t.Parallel()
	good := func(instr ...byte) []byte {
		e := &ehBuilder{addr: 0x2000}
		c := e.cie("zR", stdCIE...)
		e.fde(c, 0x1000, 0x100, instr...)
		return e.b
	}
	cieWith := func(version byte, aug string, rest ...byte) []byte {
		e := &ehBuilder{}
		e.entry(cat([]byte{0, 0, 0, 0, version}, []byte(aug), []byte{0}, rest))
		return e.b
	}
	tests := []struct {
		name string
		eh   []byte
		want string
	}{
		{"truncated length", []byte{0x10, 0}, "truncated"},
		{"entry overruns the section", []byte{0x10, 0, 0, 0, 0, 0, 0, 0}, "overruns"},
		{"reserved length", []byte{0xf5, 0xff, 0xff, 0xff, 0, 0, 0, 0}, "reserved"},
		{"too short", []byte{2, 0, 0, 0, 0, 0}, "too short"},
		{"CIE version 2", cieWith(2, "", 1, 0x78, 16), "version 2"},
		{"unknown augmentation", cieWith(1, "eh", 1, 0x78, 16), "augmentation"},
		{"unterminated augmentation", []byte{5, 0, 0, 0, 0, 0, 0, 0, 1, 'z'}, "unterminated"},
		{"return address column", cieWith(1, "", 1, 0x78, 40), "return address column 40"},
		{"augmentation data overruns", cieWith(1, "zR", 1, 0x78, 16, 9, 0x1b), "truncated"},
		{"bad FDE encoding", cieWith(1, "zR", 1, 0x78, 16, 1, 0x07), "pointer format"},
		{"textrel FDE encoding", cieWith(1, "zR", 1, 0x78, 16, 1, 0x23), "application"},
		{"LEB128 too long", cieWith(1, "", 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01), "LEB128"},
		{"FDE points before the section", []byte{8, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0}, "before the section"},
		{"FDE points to an FDE", func() []byte {
			e := &ehBuilder{addr: 0x2000}
			c := e.cie("zR", stdCIE...)
			f := e.fde(c, 0x1000, 0x10)
			e.fde(f, 0x2000, 0x10)
			return e.b
		}(), "not a CIE"},
		{"FDE range overflows", func() []byte {
			e := &ehBuilder{addr: 0x2000}
			c := e.entry(cat([]byte{0, 0, 0, 0, 1, 'z', 'R', 0, 1, 0x78, 16, 1, peUdata8}, stdCIE))
			u64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
			e.entry(cat(le32(uint32(len(e.b)+4-c)), u64(0xfffffffffffff000), u64(0x100000), []byte{0}))
			return e.b
		}(), "overflows"},
		{"unknown instruction", good(0x3f), "unknown call frame instruction"},
		{"DW_CFA_GNU_window_save", good(0x2d), "unknown call frame instruction"},
		{"restore_state without remember_state", good(cfaRestoreState), "without DW_CFA_remember_state"},
		{"remember_state too deep", good(func() []byte {
			b := make([]byte, maxStateDepth+1)
			for i := range b {
				b[i] = cfaRememberState
			}
			return b
		}()...), "nested"},
		{"def_cfa_register after def_cfa_expression", good(cfaDefCFAExpression, 1, 0x30, cfaDefCFARegister, 6), "not register+offset"},
		{"CFA in a vector register", good(cfaDefCFA, 17, 8), "register 17"},
		{"register out of range", good(cfaUndefined, 0x80, 0x04), "out of range"},
		{"truncated operand", good(cfaDefCFA, 7), "truncated"},
		{"expression overruns", good(cfaExpressionOp, 3, 9, 0x30), "truncated"},
		{"unsupported expression operation", good(cfaDefCFAExpression, 1, 0x9c), "not supported"},
		{"expression register 17", good(cfaDefCFAExpression, 3, 0x92, 17, 0), "register 17"},
		{"branch into an operand", good(cfaDefCFAExpression, 6, opConst2u, 0, 0, opSkip, 0xfb, 0xff), "not an operation"},
		{"deref_size 9", good(cfaDefCFAExpression, 2, opDerefSize, 9), "deref_size"},
		{"advance_loc in a CIE", cieWith(1, "", 1, 0x78, 16, 0x41), "in a CIE"},
		{"restore in a CIE", cieWith(1, "", 1, 0x78, 16, 0xc6), "in a CIE"},
		{"advance overflows", func() []byte {
			e := &ehBuilder{addr: 0x2000}
			c := e.cie("zR", stdCIE...)
			e.fde(c, 0xfffffffffffffff0, 0x8, cfaAdvanceLoc4, 0xff, 0xff, 0xff, 0xff)
			return e.b
		}(), "location overflows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tab, err := newTable(sections{eh: tt.eh, ehAddr: 0x2000})
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("newTable = %v, %v; want a *FormatError", tab, err)
			}
			if !strings.Contains(fe.Reason, tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if fe.Section != ".eh_frame" {
				t.Errorf("error in section %q", fe.Section)
			}
		})
	}
}

// hdrFor builds an .eh_frame_hdr at hdrAddr for the FDEs of e, with the
// given table entries (initial location, FDE address).
func hdrFor(e *ehBuilder, hdrAddr uint64, entries [][2]uint64) []byte {
	h := []byte{1, peSdata4 | pePcrel, peUdata4, peSdata4 | peDatarel}
	h = append(h, le32(uint32(e.addr-(hdrAddr+4)))...)
	h = append(h, le32(uint32(len(entries)))...)
	for _, en := range entries {
		h = append(h, le32(uint32(en[0]-hdrAddr))...)
		h = append(h, le32(uint32(en[1]-hdrAddr))...)
	}
	return h
}

func TestEhFrameHdr(t *testing.T) {
	t.Parallel()
	e := &ehBuilder{addr: 0x2000}
	c := e.cie("zR", stdCIE...)
	f1 := e.fde(c, 0x1000, 0x100, cfaDefCFAOffset, 16)
	f2 := e.fde(c, 0x1100, 0x100, cfaDefCFAOffset, 24)
	const hdrAddr = 0x1f00
	entries := [][2]uint64{{0x1000, e.addr + uint64(f1)}, {0x1100, e.addr + uint64(f2)}}

	tab, err := newTable(sections{eh: e.b, ehAddr: e.addr, hdr: hdrFor(e, hdrAddr, entries), hdrAddr: hdrAddr})
	if err != nil {
		t.Fatal(err)
	}
	if tab.hdr == nil || tab.ehIndex != nil {
		t.Fatalf("the table of .eh_frame_hdr is not used")
	}
	for pc, want := range map[uint64]string{0xfff: "no FDE", 0x1000: "cfa=r7+16 " + std, 0x10ff: "cfa=r7+16 " + std, 0x1100: "cfa=r7+24 " + std, 0x1200: "no FDE"} {
		if got, err := rowAt(tab, pc); err != nil || got != want {
			t.Errorf("pc %#x: %q, %v; want %q", pc, got, err, want)
		}
	}

	// A table that leaves out an FDE is not used.
	tab, err = newTable(sections{eh: e.b, ehAddr: e.addr, hdr: hdrFor(e, hdrAddr, entries[:1]), hdrAddr: hdrAddr})
	if err != nil || tab.hdr != nil || len(tab.ehIndex) != 2 {
		t.Errorf("partial table: %v, hdr used %v", err, err == nil && tab.hdr != nil)
	}

	bad := []struct {
		name string
		hdr  []byte
		want string
	}{
		{"version", append([]byte{2}, hdrFor(e, hdrAddr, entries)[1:]...), "version 2"},
		{"unsorted", hdrFor(e, hdrAddr, [][2]uint64{entries[1], entries[0]}), "not sorted"},
		{"not an FDE", hdrFor(e, hdrAddr, [][2]uint64{entries[0], {0x1100, e.addr + 1}}), "not an FDE"},
		{"wrong location", hdrFor(e, hdrAddr, [][2]uint64{entries[0], {0x1180, entries[1][1]}}), "starts at"},
		{"wrong eh_frame_ptr", hdrFor(&ehBuilder{addr: 0x3000}, hdrAddr, entries), "eh_frame_ptr"},
		{"count overruns", hdrFor(e, hdrAddr, entries)[:16], "overruns"},
	}
	for _, tt := range bad {
		_, err := newTable(sections{eh: e.b, ehAddr: e.addr, hdr: tt.hdr, hdrAddr: hdrAddr})
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Section != ".eh_frame_hdr" || !strings.Contains(fe.Reason, tt.want) {
			t.Errorf("%s: err = %v, want a *FormatError in .eh_frame_hdr about %q", tt.name, err, tt.want)
		}
	}
}

// TestDebugFrame checks the .debug_frame layout: all-ones CIE ids,
// absolute CIE offsets, absolute addresses, version 4 CIEs, and that
// .eh_frame wins where both cover a pc.
func TestDebugFrame(t *testing.T) {
	t.Parallel()
	var d []byte
	entry := func(body []byte) int {
		off := len(d)
		d = append(d, le32(uint32(len(body)))...)
		d = append(d, body...)
		return off
	}
	addr := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	// An FDE before its CIE is allowed in .debug_frame; a zero terminator
	// between them is skipped.
	const cie1 = 4 + 4 + 8 + 8 + 2 + 4
	entry(cat(le32(uint32(cie1)), addr(0x5000), addr(0x100), []byte{cfaDefCFAOffset, 16}))
	d = append(d, 0, 0, 0, 0)
	if len(d) != cie1 {
		t.Fatalf("layout: %d", len(d))
	}
	entry(cat(le32(0xffffffff), []byte{1, 0, 1, 0x78, 16}, stdCIE))
	cie4 := entry(cat(le32(0xffffffff), []byte{4, 0, 8, 0, 1, 0x78, 16}, stdCIE))
	entry(cat(le32(uint32(cie4)), addr(0x6000), addr(0x100), []byte{cfaDefCFAOffset, 32}))
	entry(cat(le32(uint32(cie4)), addr(0x1000), addr(0x100), []byte{cfaDefCFAOffset, 48}))

	e := &ehBuilder{addr: 0x2000}
	c := e.cie("zR", stdCIE...)
	e.fde(c, 0x1000, 0x100, cfaDefCFAOffset, 16)

	tab, err := newTable(sections{eh: e.b, ehAddr: e.addr, debug: d})
	if err != nil {
		t.Fatal(err)
	}
	for pc, want := range map[uint64]string{0x5000: "cfa=r7+16 " + std, 0x6050: "cfa=r7+32 " + std, 0x1000: "cfa=r7+16 " + std, 0x7000: "no FDE"} {
		if got, err := rowAt(tab, pc); err != nil || got != want {
			t.Errorf("pc %#x: %q, %v; want %q", pc, got, err, want)
		}
	}
}
