package unwind

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

var errUnmapped = errors.New("unmapped")

// fakeMem is a stack: data at [base, base+len(data)).
type fakeMem struct {
	base uint64
	data []byte
}

func newFakeMem(base uint64, size int) *fakeMem {
	return &fakeMem{base: base, data: make([]byte, size)}
}

func (m *fakeMem) ReadAt(p []byte, addr uint64) error {
	if addr < m.base || addr-m.base > uint64(len(m.data)) || uint64(len(p)) > uint64(len(m.data))-(addr-m.base) {
		return errUnmapped
	}
	copy(p, m.data[addr-m.base:])
	return nil
}

func (m *fakeMem) put(addr, v uint64) { binary.LittleEndian.PutUint64(m.data[addr-m.base:], v) }

// synthetic is a module at [0x1000, 0x8000), bias 0, with these functions:
//
//	f1    [0x1000,0x1100) CFA rsp+16, rbx at CFA-16, return address at CFA-8
//	f2    [0x2000,0x2010) CFA rsp+16
//	outer [0x3000,0x3100) return address undefined (like _start)
//	sig   [0x3fff,0x4010) signal frame (like __restore_rt): CFA = *(rsp+16),
//	                      rip at rsp+24, rbx at rsp+32
//	f4    [0x4010,0x4100) CFA rsp+8
//	sig2  [0x4200,0x4210) like sig, without a padding byte before it
//	rec   [0x5000,0x5100) CFA rsp+16
//	byRAX [0x6000,0x6100) CFA rax+8 (rax is lost in a caller)
//	down  [0x6100,0x6200) CFA rsp-8 (corrupt)
//	nocfi [0x7000,0x7100) no FDE
func synthetic(t *testing.T) []Module {
	t.Helper()
	return []Module{{Start: 0x1000, End: 0x8000, Table: syntheticEh().table(t)}}
}

func syntheticEh() *ehBuilder {
	e := &ehBuilder{addr: 0x800000}
	std := e.cie("zR", stdCIE...)
	outer := e.cie("zR", cfaDefCFA, 7, 8, cfaUndefined, 16)
	sig := e.cie("zRS")
	e.fde(std, 0x1000, 0x100, cfaDefCFAOffset, 16, 0x80|3, 2)
	e.fde(std, 0x2000, 0x10, cfaDefCFAOffset, 16)
	e.fde(outer, 0x3000, 0x100)
	e.fde(sig, 0x3fff, 0x11,
		cfaDefCFAExpression, 3, 0x77, 16, opDeref,
		cfaExpressionOp, 16, 2, 0x77, 24,
		cfaExpressionOp, 3, 2, 0x77, 32)
	e.fde(std, 0x4010, 0xf0)
	e.fde(sig, 0x4200, 0x10,
		cfaDefCFAExpression, 3, 0x77, 16, opDeref,
		cfaExpressionOp, 16, 2, 0x77, 24,
		cfaExpressionOp, 3, 2, 0x77, 32)
	e.fde(std, 0x5000, 0x100, cfaDefCFAOffset, 16)
	e.fde(std, 0x6000, 0x100, cfaDefCFA, 0, 8)
	e.fde(std, 0x6100, 0x100, cfaDefCFASf, 7, 1)
	return e
}

func TestUnwindSynthetic(t *testing.T) {
	t.Parallel()
	mods := synthetic(t)
	tests := []struct {
		name      string
		regs      Regs
		stack     map[uint64]uint64
		maxFrames int
		modules   []Module
		want      []Frame
		wantErr   string // "" for none, else a substring
	}{{
		name:  "to the outermost frame, return address at the end of a function",
		regs:  Regs{RIP: 0x1050, RSP: 0x8000, RBX: 1},
		stack: map[uint64]uint64{0x8000: 0xb, 0x8008: 0x2010, 0x8018: 0x3050},
		want:  []Frame{{PC: 0x1050, CFA: 0x8010, Exact: true}, {PC: 0x2010, CFA: 0x8020}, {PC: 0x3050, CFA: 0x8028}},
	}, {
		name: "through a signal frame into an interrupted function's first instruction",
		regs: Regs{RIP: 0x1050, RSP: 0x8000},
		stack: map[uint64]uint64{0x8008: 0x4000, // handler returns to the trampoline
			0x8020: 0x9000, 0x8028: 0x4010, 0x8030: 0x77, // the saved context
			0x9000: 0x3050},
		want: []Frame{{PC: 0x1050, CFA: 0x8010, Exact: true}, {PC: 0x4000, CFA: 0x9000},
			{PC: 0x4010, CFA: 0x9008, Exact: true}, {PC: 0x3050, CFA: 0x9010}},
	}, {
		name: "through a signal trampoline that starts right at the return address",
		regs: Regs{RIP: 0x1050, RSP: 0x8000},
		stack: map[uint64]uint64{0x8008: 0x4200,
			0x8020: 0x9000, 0x8028: 0x4010, 0x8030: 0x77,
			0x9000: 0x3050},
		want: []Frame{{PC: 0x1050, CFA: 0x8010, Exact: true}, {PC: 0x4200, CFA: 0x9000},
			{PC: 0x4010, CFA: 0x9008, Exact: true}, {PC: 0x3050, CFA: 0x9010}},
	}, {
		name:    "no CFI and no frame pointer",
		regs:    Regs{RIP: 0x7050, RSP: 0x8000, RBP: 3},
		want:    []Frame{{PC: 0x7050, Exact: true}},
		wantErr: "no call frame information for pc 0x7050",
	}, {
		name:  "no CFI, frame pointer",
		regs:  Regs{RIP: 0x7050, RSP: 0x8000, RBP: 0x8040},
		stack: map[uint64]uint64{0x8040: 0x8100, 0x8048: 0x3050},
		want:  []Frame{{PC: 0x7050, CFA: 0x8050, Exact: true}, {PC: 0x3050, CFA: 0x8058, FramePointer: true}},
	}, {
		name:    "frame pointer below the stack pointer",
		regs:    Regs{RIP: 0x7050, RSP: 0x8048, RBP: 0x8040},
		stack:   map[uint64]uint64{0x8040: 0x8100, 0x8048: 0x3050},
		want:    []Frame{{PC: 0x7050, Exact: true}},
		wantErr: "no call frame information",
	}, {
		name:    "frame pointer with a return address outside the modules",
		regs:    Regs{RIP: 0x7050, RSP: 0x8000, RBP: 0x8040},
		stack:   map[uint64]uint64{0x8040: 0x8100, 0x8048: 0x123456789},
		want:    []Frame{{PC: 0x7050, Exact: true}},
		wantErr: "no call frame information",
	}, {
		name:    "a module without a table",
		regs:    Regs{RIP: 0x1050, RSP: 0x8000},
		stack:   map[uint64]uint64{0x8008: 0x10000050},
		modules: append([]Module{{Start: 0x10000000, End: 0x10001000}}, mods...),
		want:    []Frame{{PC: 0x1050, CFA: 0x8010, Exact: true}, {PC: 0x10000050}},
		wantErr: "no call frame information for pc 0x10000050",
	}, {
		name:      "deeper than maxFrames",
		regs:      Regs{RIP: 0x5050, RSP: 0x8000},
		stack:     map[uint64]uint64{0x8008: 0x5060, 0x8018: 0x5060, 0x8028: 0x5060, 0x8038: 0x5060},
		maxFrames: 3,
		want:      []Frame{{PC: 0x5050, CFA: 0x8010, Exact: true}, {PC: 0x5060, CFA: 0x8020}, {PC: 0x5060, CFA: 0x8030}},
		wantErr:   "more frames than the limit",
	}, {
		name:      "exactly maxFrames",
		regs:      Regs{RIP: 0x2005, RSP: 0x8000},
		stack:     map[uint64]uint64{0x8008: 0x3050},
		maxFrames: 2,
		want:      []Frame{{PC: 0x2005, CFA: 0x8010, Exact: true}, {PC: 0x3050, CFA: 0x8018}},
	}, {
		name:  "return address outside the modules",
		regs:  Regs{RIP: 0x2005, RSP: 0x8000},
		stack: map[uint64]uint64{0x8008: 0xdead0000},
		want:  []Frame{{PC: 0x2005, CFA: 0x8010, Exact: true}},
	}, {
		name: "return address 0",
		regs: Regs{RIP: 0x2005, RSP: 0x8000},
		want: []Frame{{PC: 0x2005, CFA: 0x8010, Exact: true}},
	}, {
		name:    "CFA based on a register the callee did not save",
		regs:    Regs{RIP: 0x1050, RSP: 0x8000, RAX: 0x8000},
		stack:   map[uint64]uint64{0x8008: 0x6010},
		want:    []Frame{{PC: 0x1050, CFA: 0x8010, Exact: true}, {PC: 0x6010}},
		wantErr: "frame 1 (pc 0x6010): CFA: register 0 is unknown",
	}, {
		name:    "CFA based on rax in frame 0",
		regs:    Regs{RIP: 0x6010, RSP: 0x8000, RAX: 0x8100},
		stack:   map[uint64]uint64{0x8100: 0x3050},
		want:    []Frame{{PC: 0x6010, CFA: 0x8108, Exact: true}, {PC: 0x3050, CFA: 0x8110}},
		wantErr: "",
	}, {
		name:    "unreadable stack",
		regs:    Regs{RIP: 0x1050, RSP: 0x100},
		want:    []Frame{{PC: 0x1050, CFA: 0x110, Exact: true}},
		wantErr: "frame 0 (pc 0x1050): register 3: reading 8 bytes at 0x100",
	}, {
		name:    "stack pointer moving down",
		regs:    Regs{RIP: 0x6150, RSP: 0x8010},
		stack:   map[uint64]uint64{0x8000: 0x3050},
		want:    []Frame{{PC: 0x6150, CFA: 0x8008, Exact: true}},
		wantErr: "stack pointer would move down",
	}, {
		name:    "pc in no module",
		regs:    Regs{RIP: 0x123456789, RSP: 0x8000},
		want:    []Frame{{PC: 0x123456789, Exact: true}},
		wantErr: "no call frame information",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mem := newFakeMem(0x7000, 0x4000)
			for a, v := range tt.stack {
				mem.put(a, v)
			}
			m := mods
			if tt.modules != nil {
				m = tt.modules
			}
			frames, err := Unwind(tt.regs, m, mem, tt.maxFrames)
			if diff := cmpDiff(tt.want, frames); diff != "" {
				t.Errorf("frames (-want +got):\n%s", diff)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("err = %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("err = %v, want one that says %q", err, tt.wantErr)
			}
		})
	}
}

// TestUnwindErrorTypes checks that callers can tell the errors apart.
func TestUnwindErrorTypes(t *testing.T) {
	t.Parallel()
	mods := synthetic(t)
	mem := newFakeMem(0x7000, 0x4000)

	_, err := Unwind(Regs{RIP: 0x7050, RSP: 0x8000}, mods, mem, 0)
	var nc *NoCFIError
	if !errors.As(err, &nc) || nc.PC != 0x7050 {
		t.Errorf("no CFI: err = %v, want *NoCFIError{PC: 0x7050}", err)
	}

	_, err = Unwind(Regs{RIP: 0x1050, RSP: 0x100}, mods, mem, 0)
	var fe *FrameError
	if !errors.As(err, &fe) || fe.Index != 0 || fe.PC != 0x1050 || !errors.Is(err, errUnmapped) {
		t.Errorf("unreadable stack: err = %v, want a *FrameError wrapping the memory error", err)
	}

	mem.put(0x8008, 0x5060)
	mem.put(0x8018, 0x5060)
	_, err = Unwind(Regs{RIP: 0x5050, RSP: 0x8000}, mods, mem, 1)
	if !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated: err = %v, want ErrTruncated", err)
	}
}

func TestFrameLookupPC(t *testing.T) {
	t.Parallel()
	if got := (Frame{PC: 0x100, Exact: true}).LookupPC(); got != 0x100 {
		t.Errorf("exact: %#x", got)
	}
	if got := (Frame{PC: 0x100}).LookupPC(); got != 0xff {
		t.Errorf("return address: %#x", got)
	}
}

func TestEval(t *testing.T) {
	t.Parallel()
	mem := newFakeMem(0x1000, 0x100)
	mem.put(0x1000, 0x1122334455667788)
	regs := [numRegs]uint64{7: 0x1000, 6: 0x2000, 16: 0x40100b}
	valid := uint32(1<<7 | 1<<6 | 1<<16)
	tests := []struct {
		name    string
		expr    []byte
		push    bool
		want    uint64
		wantErr string
	}{
		{"lit", []byte{opLit0 + 31}, false, 31, ""},
		{"breg", []byte{0x77, 0x10}, false, 0x1010, ""},
		{"breg negative", []byte{0x76, 0x78}, false, 0x1ff8, ""},
		{"bregx", []byte{opBregx, 6, 8}, false, 0x2008, ""},
		{"deref", []byte{0x77, 0, opDeref}, false, 0x1122334455667788, ""},
		{"deref_size", []byte{0x77, 0, opDerefSize, 2}, false, 0x7788, ""},
		{"glibc __restore_rt CFA", []byte{0x77, 0, opDeref}, false, 0x1122334455667788, ""},
		{"PLT CFA (rip&15 >= 11)", []byte{0x77, 8, 0x80, 0, opLit0 + 15, opAnd, opLit0 + 11, opGe, opLit0 + 3, opShl, opPlus}, false, 0x1010, ""},
		{"pushed CFA", []byte{opPlusUconst, 8}, true, 0x508, ""},
		{"consts", []byte{opConst1s, 0xff, opConst2s, 0xfe, 0xff, opPlus}, false, ^uint64(2), ""},
		{"const4u const8u", []byte{opConst4u, 1, 0, 0, 0, opConst8u, 1, 0, 0, 0, 0, 0, 0, 0, opPlus}, false, 2, ""},
		{"constu consts", []byte{opConstu, 0x80, 1, opConsts, 0x7f, opPlus}, false, 127, ""},
		{"minus is second minus top", []byte{opLit0 + 10, opLit0 + 3, opMinus}, false, 7, ""},
		{"lt is signed", []byte{opConst1s, 0xff, opLit0, opLt}, false, 1, ""},
		{"div is signed", []byte{opConst1s, 0xf8, opLit0 + 2, opDiv}, false, ^uint64(3), ""},
		{"mod", []byte{opLit0 + 10, opLit0 + 3, opMod}, false, 1, ""},
		{"shra", []byte{opConst1s, 0xf0, opLit0 + 2, opShra}, false, ^uint64(3), ""},
		{"shr", []byte{opConst1s, 0xf0, opConst1u, 60, opShr}, false, 0xf, ""},
		{"neg not abs", []byte{opLit0 + 5, opNeg, opAbs, opNot}, false, ^uint64(5), ""},
		// rot: [1 2 3] -> [3 1 2]; drop, swap, drop leaves 1.
		{"rot swap drop", []byte{opLit0 + 1, opLit0 + 2, opLit0 + 3, opRot, opDrop, opSwap, opDrop}, false, 1, ""},
		{"dup", []byte{opLit0 + 4, opDup, opPlus}, false, 8, ""},
		{"pick", []byte{opLit0 + 1, opLit0 + 2, opPick, 1}, false, 1, ""},
		{"over", []byte{opLit0 + 1, opLit0 + 2, opOver}, false, 1, ""},
		// 1==1 -> 1; 1!=1 -> 0; 0>2 -> 0; 0<=0 -> 1.
		{"eq ne gt le", []byte{opLit0 + 1, opLit0 + 1, opEq, opLit0 + 1, opNe, opLit0 + 2, opGt, opLit0, opLe}, false, 1, ""},
		{"xor or mul", []byte{opLit0 + 6, opLit0 + 3, opXor, opLit0 + 8, opOr, opLit0 + 2, opMul}, false, 26, ""},
		{"bra taken", []byte{opLit0 + 1, opBra, 1, 0, opLit0 + 7, opLit0 + 9}, false, 9, ""},
		{"bra not taken", []byte{opLit0, opBra, 1, 0, opLit0 + 7}, false, 7, ""},
		{"skip", []byte{opSkip, 1, 0, opLit0 + 7, opLit0 + 9, opNop}, false, 9, ""},
		{"addr adds the bias", []byte{opAddr, 0, 0x10, 0, 0, 0, 0, 0, 0}, false, 0x1000 + 0x500000, ""},
		{"empty", nil, false, 0, "underflow"},
		{"underflow", []byte{opPlus}, false, 0, "underflow"},
		{"overflow", func() []byte {
			b := make([]byte, maxExprStack+1)
			for i := range b {
				b[i] = opLit0
			}
			return b
		}(), false, 0, "overflow"},
		{"infinite loop", []byte{opSkip, 0xfd, 0xff}, false, 0, "more than"},
		{"division by zero", []byte{opLit0 + 1, opLit0, opDiv}, false, 0, "division by zero"},
		{"unknown register", []byte{0x70, 0}, false, 0, "register 0 is unknown"},
		{"unreadable", []byte{opLit0, opDeref}, false, 0, "reading 8 bytes at 0x0"},
		{"truncated operand", []byte{opConst4u, 1}, false, 0, "truncated"},
		{"unsupported", []byte{0x9c}, false, 0, "not supported"},
		{"branch out", []byte{opSkip, 0x10, 0}, false, 0, "out of the expression"},
	}
	for _, tt := range tests {
		u := &unwinder{mem: mem, regs: regs, valid: valid, bias: 0x500000}
		got, err := u.eval(tt.expr, 0x500, tt.push)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: = %#x, %v; want an error about %q", tt.name, got, err, tt.wantErr)
			}
		case err != nil || got != tt.want:
			t.Errorf("%s: = %#x, %v; want %#x", tt.name, got, err, tt.want)
		}
	}
}
