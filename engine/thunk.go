package engine

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// regNum returns the hardware number (0-15) of a general register and its
// width in bits.
func regNum(r x86asm.Reg) (num byte, bits int, ok bool) {
	switch {
	case r >= x86asm.RAX && r <= x86asm.R15:
		return byte(r - x86asm.RAX), 64, true
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return byte(r - x86asm.EAX), 32, true
	}
	return 0, 0, false
}

// rewriteLEA turns "lea disp(%rip), %reg" into "mov disp(%rip), %reg" in
// place (the two differ only in the opcode byte); the caller points the
// displacement at a slot that holds the address.
func rewriteLEA(insn []byte, in x86asm.Inst, dispOff uint64) error {
	reg, ok := in.Args[0].(x86asm.Reg)
	if !ok {
		return fmt.Errorf("unexpected lea form %v", in)
	}
	if _, bits, ok := regNum(reg); !ok || bits != 64 {
		return fmt.Errorf("lea into %v cannot be redirected through a slot", reg)
	}
	// The opcode is the byte before ModRM, which is the byte before the
	// 4-byte displacement.
	op := dispOff - 2
	if insn[op] != 0x8d {
		return fmt.Errorf("unexpected lea encoding % x", insn[:in.Len])
	}
	insn[op] = 0x8b
	return nil
}

// loadThunk returns code that does what "mov sym(%rip), %reg" did for a
// symbol out of reach: load the symbol's address from slot into the
// register, load through it, and jump back to ret.
func loadThunk(in x86asm.Inst, slot, at, ret uint64) ([]byte, error) {
	reg, ok := in.Args[0].(x86asm.Reg)
	if !ok {
		return nil, fmt.Errorf("instruction %v is not a load into a register", in)
	}
	mem, ok := in.Args[1].(x86asm.Mem)
	if !ok || mem.Base != x86asm.RIP || mem.Index != 0 || mem.Segment != 0 {
		return nil, fmt.Errorf("instruction %v is not a RIP-relative load", in)
	}
	n, bits, ok := regNum(reg)
	if !ok {
		return nil, fmt.Errorf("load into %v cannot be redirected", reg)
	}
	var code []byte
	rexR := byte(0)
	if n >= 8 {
		rexR = 0x04
	}
	// mov slot(%rip), %r64
	code = append(code, 0x48|rexR, 0x8b, 0x05|(n&7)<<3, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(code[3:], uint32(int32(int64(slot)-int64(at+7))))
	// mov (%r64), %r64 or %r32
	rex := rexR
	if n >= 8 {
		rex |= 0x01 // REX.B
	}
	if bits == 64 {
		rex |= 0x48
	} else if rex != 0 {
		rex |= 0x40
	}
	if rex != 0 {
		code = append(code, rex)
	}
	switch n & 7 {
	case 4: // rsp/r12 as base needs a SIB byte
		code = append(code, 0x8b, 0x04|(n&7)<<3, 0x24)
	case 5: // rbp/r13 as base needs a displacement
		code = append(code, 0x8b, 0x45|(n&7)<<3, 0x00)
	default:
		code = append(code, 0x8b, (n&7)<<3|(n&7))
	}
	// jmp ret
	j := len(code)
	code = append(code, 0xe9, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(code[j+1:], uint32(int32(int64(ret)-int64(at+uint64(j)+5))))
	return code, nil
}
