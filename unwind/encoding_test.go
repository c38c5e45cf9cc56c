package unwind

import (
	"encoding/binary"
	"errors"
	"testing"
)

// TestPointerEncodings decodes one pointer in every format, absolute,
// pc-relative and data-relative, from a field at link-time address 0x1004.
func TestPointerEncodings(t *testing.T) {
	t.Parallel()
	le16 := func(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
	le64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	formats := []struct {
		name  string
		enc   byte
		bytes []byte
		value uint64 // the decoded number, before application
	}{
		{"absptr", peAbsptr, le64(0x123456789), 0x123456789},
		{"udata8", peUdata8, le64(0xfffffffffffffff0), 0xfffffffffffffff0},
		{"sdata8", peSdata8, le64(0xfffffffffffffff0), 0xfffffffffffffff0},
		{"udata4", peUdata4, le32(0xfffffff0), 0xfffffff0},
		{"sdata4", peSdata4, le32(0xfffffff0), ^uint64(15)},
		{"udata2", peUdata2, le16(0xfff0), 0xfff0},
		{"sdata2", peSdata2, le16(0xfff0), ^uint64(15)},
		{"uleb128", peUleb128, []byte{0xe5, 0x8e, 0x26}, 624485},
		{"sleb128", peSleb128, []byte{0xc0, 0xbb, 0x78}, uint64(-123456 & (1<<64 - 1))},
	}
	const secAddr, fieldOff, dataBase = 0x1000, 4, 0x50000
	for _, f := range formats {
		for _, app := range []struct {
			name string
			bits byte
			base uint64
		}{{"", 0, 0}, {"pcrel", pePcrel, secAddr + fieldOff}, {"datarel", peDatarel, dataBase}} {
			enc := f.enc | app.bits
			if err := checkEncoding(enc, false); err != nil {
				t.Errorf("%s %s: checkEncoding(%#x): %v", f.name, app.name, enc, err)
				continue
			}
			if n := encodedSize(enc); n != 0 && n != len(f.bytes) {
				t.Errorf("%s: encodedSize = %d, want %d", f.name, n, len(f.bytes))
			}
			s := &section{name: ".eh_frame_hdr", addr: secAddr, data: cat([]byte{9, 9, 9, 9}, f.bytes, []byte{0xaa})}
			b := newBuf(s, fieldOff, len(s.data))
			got := b.pointer(enc, dataBase, true)
			if b.err != nil || got != f.value+app.base || b.left() != 1 {
				t.Errorf("%s %s: pointer = %#x, err %v, %d bytes left; want %#x and 1", f.name, app.name, got, b.err, b.left(), f.value+app.base)
			}
		}
	}

	for _, enc := range []byte{0x05, 0x0d, 0x0f, peTextrel | peUdata4, peFuncrel | peUdata4, peAligned} {
		if checkEncoding(enc, true) == nil {
			t.Errorf("checkEncoding(%#x) accepts an encoding the package cannot decode", enc)
		}
	}
	if checkEncoding(peIndirect|pePcrel|peSdata4, false) == nil || checkEncoding(peIndirect|pePcrel|peSdata4, true) != nil {
		t.Error("indirect encodings: accepted only where allowed")
	}

	// datarel needs a base, which only .eh_frame_hdr has.
	s := &section{name: ".eh_frame", data: le32(1)}
	b := newBuf(s, 0, 4)
	b.pointer(peDatarel|peUdata4, 0, false)
	var fe *FormatError
	if !errors.As(b.err, &fe) {
		t.Errorf("datarel in .eh_frame: %v, want a *FormatError", b.err)
	}
}

// TestFDEEncodings builds FDEs whose CIEs use other pointer encodings.
func TestFDEEncodings(t *testing.T) {
	t.Parallel()
	le64 := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	tests := []struct {
		name   string
		enc    byte
		fields []byte // pc_begin and pc_range
	}{
		{"udata8", peUdata8, cat(le64(0x7000), le64(0x40))},
		{"absptr", peAbsptr, cat(le64(0x7000), le64(0x40))},
		{"udata4", peUdata4, cat(le32(0x7000), le32(0x40))},
		{"uleb128", peUleb128, cat(uleb(0x7000), uleb(0x40))},
		{"sleb128", peSleb128, cat(sleb(0x7000), sleb(0x40))},
	}
	for _, tt := range tests {
		e := &ehBuilder{addr: 0x2000}
		c := e.entry(cat([]byte{0, 0, 0, 0, 1, 'z', 'R', 0, 1, 0x78, 16, 1, tt.enc}, stdCIE))
		e.entry(cat(le32(uint32(len(e.b)+4-c)), tt.fields, []byte{0, cfaDefCFAOffset, 16}))
		tab, err := newTable(sections{eh: e.b, ehAddr: e.addr})
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		for pc, want := range map[uint64]string{0x6fff: "no FDE", 0x7000: "cfa=r7+16 " + std, 0x703f: "cfa=r7+16 " + std, 0x7040: "no FDE"} {
			if got, err := rowAt(tab, pc); err != nil || got != want {
				t.Errorf("%s: pc %#x: %q, %v; want %q", tt.name, pc, got, err, want)
			}
		}
	}
}

// TestStepRules applies every kind of register rule to one frame.
func TestStepRules(t *testing.T) {
	t.Parallel()
	e := &ehBuilder{addr: 0x2000}
	c := e.cie("zR", stdCIE...)
	e.fde(c, 0x1000, 0x100,
		cfaDefCFAOffset, 16,
		0x80|6, 2, // rbp at CFA-16
		0x80|0, 2, // rax at CFA-16: a caller-saved register with a rule
		cfaSameValue, 3, // rbx
		cfaRegister, 12, 13, // r12 is in r13
		cfaValOffset, 13, 2, // r13 = CFA-16
		cfaValExpression, 14, 2, opLit0+5, opLit0+1, // r14 = 1
		cfaUndefined, 15, // r15
		cfaExpressionOp, 8, 2, 0x77, 0, // r8 at the callee's rsp+0 (= CFA-16)
	)
	tab := e.table(t)
	f, ok, err := tab.find(0x1010)
	if !ok || err != nil {
		t.Fatalf("find: %v %v", ok, err)
	}
	mem := newFakeMem(0x7000, 0x2000)
	mem.put(0x8000, 0x6666)
	mem.put(0x8008, 0x3050)
	regs := Regs{RSP: 0x8000, RBX: 0x33, RDX: 0x11, R13: 0x1313, R15: 0x15, RIP: 0x1010}
	u := &unwinder{mem: mem, regs: regs.array(), valid: allRegs}
	next, err := u.step(&f, 0x1010)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{"cfa": next.cfa}
	for i := range numRegs {
		if next.valid&(1<<i) != 0 {
			got[dwarfNames[i]] = next.regs[i]
		}
	}
	want := map[string]uint64{
		"cfa": 0x8010, "rsp": 0x8010, "ra": 0x3050,
		"rbp": 0x6666, "rax": 0x6666, "rbx": 0x33, "r12": 0x1313, "r13": 0x8000, "r14": 1, "r8": 0x6666,
		// rdx, rcx, rsi, rdi, r9-r11 are lost in a caller; r15 is undefined.
	}
	if diff := cmpDiff(want, got); diff != "" {
		t.Errorf("caller's registers (-want +got):\n%s", diff)
	}
}
