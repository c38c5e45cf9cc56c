package unwind

import (
	"errors"
	"fmt"
)

// DWARF expression operations (DWARF 5 section 2.5) that call frame
// information uses.
const (
	opAddr       = 0x03
	opDeref      = 0x06
	opConst1u    = 0x08
	opConst1s    = 0x09
	opConst2u    = 0x0a
	opConst2s    = 0x0b
	opConst4u    = 0x0c
	opConst4s    = 0x0d
	opConst8u    = 0x0e
	opConst8s    = 0x0f
	opConstu     = 0x10
	opConsts     = 0x11
	opDup        = 0x12
	opDrop       = 0x13
	opOver       = 0x14
	opPick       = 0x15
	opSwap       = 0x16
	opRot        = 0x17
	opAbs        = 0x19
	opAnd        = 0x1a
	opDiv        = 0x1b
	opMinus      = 0x1c
	opMod        = 0x1d
	opMul        = 0x1e
	opNeg        = 0x1f
	opNot        = 0x20
	opOr         = 0x21
	opPlus       = 0x22
	opPlusUconst = 0x23
	opShl        = 0x24
	opShr        = 0x25
	opShra       = 0x26
	opXor        = 0x27
	opBra        = 0x28
	opEq         = 0x29
	opGe         = 0x2a
	opGt         = 0x2b
	opLe         = 0x2c
	opLt         = 0x2d
	opNe         = 0x2e
	opSkip       = 0x2f
	opLit0       = 0x30
	opLit31      = 0x4f
	opBreg0      = 0x70
	opBreg31     = 0x8f
	opBregx      = 0x92
	opDerefSize  = 0x94
	opNop        = 0x96
)

// Bounds on evaluating one expression: the stack depth and the number of
// operations (branches can loop).
const (
	maxExprStack = 64
	maxExprSteps = 1000
)

// exprSection names the bytes of an expression in errors found while
// evaluating it (Load has already checked its syntax).
var exprSection = section{name: "DWARF expression"}

// operands reads the operands of op and reports whether op is supported.
func operands(b *buf, op byte) bool {
	switch {
	case op >= opLit0 && op <= opLit31:
		return true
	case op >= opBreg0 && op <= opBreg31:
		b.sleb()
		return true
	}
	switch op {
	case opAddr, opConst8u, opConst8s:
		b.u64()
	case opConst1u, opConst1s, opPick, opDerefSize:
		b.u8()
	case opConst2u, opConst2s, opBra, opSkip:
		b.u16()
	case opConst4u, opConst4s:
		b.u32()
	case opConstu, opPlusUconst:
		b.uleb()
	case opConsts:
		b.sleb()
	case opBregx:
		b.uleb()
		b.sleb()
	case opDeref, opDup, opDrop, opOver, opSwap, opRot, opAbs, opAnd, opDiv, opMinus, opMod,
		opMul, opNeg, opNot, opOr, opPlus, opShl, opShr, opShra, opXor,
		opEq, opGe, opGt, opLe, opLt, opNe, opNop:
	default:
		return false
	}
	return true
}

// checkExpr checks the syntax of a call frame expression: known
// operations, complete operands, branches that land on an operation and
// registers the unwinder tracks. It returns the offset of a problem.
func checkExpr(e []byte) (int, error) {
	b := buf{sec: &exprSection, data: e}
	starts := make(map[int]bool)
	type jump struct{ at, to int }
	var jumps []jump
	for b.left() > 0 {
		at := b.off
		starts[at] = true
		op := b.u8()
		if !operands(&b, op) {
			return at, fmt.Errorf("operation %#x is not supported in call frame information", op)
		}
		if b.err != nil {
			return at, fmt.Errorf("operation %#x: truncated operands", op)
		}
		var reg uint64
		switch {
		case op >= opBreg0 && op <= opBreg31:
			reg = uint64(op - opBreg0)
		case op == opBregx:
			rb := buf{sec: &exprSection, data: e[at+1:]}
			reg = rb.uleb()
		case op == opBra || op == opSkip:
			off := int(int16(uint16(e[at+1]) | uint16(e[at+2])<<8))
			jumps = append(jumps, jump{at, b.off + off})
		case op == opDerefSize:
			if n := e[at+1]; n == 0 || n > 8 {
				return at, fmt.Errorf("DW_OP_deref_size of %d bytes", n)
			}
		}
		if reg >= numRegs {
			return at, fmt.Errorf("register %d is not one the unwinder tracks", reg)
		}
	}
	for _, j := range jumps {
		if j.to != len(e) && !starts[j.to] {
			return j.at, fmt.Errorf("branch to offset %d, which is not an operation", j.to)
		}
	}
	return 0, nil
}

var (
	errStackUnderflow = errors.New("DWARF expression: stack underflow")
	errStackOverflow  = errors.New("DWARF expression: stack overflow")
)

// eval evaluates a call frame expression with the registers of the current
// frame, pushing initial first if push is set, and returns the top of the
// stack.
func (u *unwinder) eval(e []byte, initial uint64, push bool) (uint64, error) {
	var st [maxExprStack]uint64
	n := 0
	if push {
		st[0] = initial
		n = 1
	}
	b := buf{sec: &exprSection, data: e}
	for steps := 0; b.left() > 0; steps++ {
		if steps == maxExprSteps {
			return 0, fmt.Errorf("DWARF expression: more than %d operations", maxExprSteps)
		}
		op := b.u8()
		// pop and push are written out below; need checks the depth.
		need := func(k int) error {
			if n < k {
				return errStackUnderflow
			}
			return nil
		}
		var v uint64 // the value to push, for operations that push one
		pushes := true
		switch {
		case op >= opLit0 && op <= opLit31:
			v = uint64(op - opLit0)
		case op >= opBreg0 && op <= opBreg31:
			off := b.sleb()
			r, err := u.reg(int(op - opBreg0))
			if err != nil {
				return 0, err
			}
			v = r + uint64(off)
		default:
			switch op {
			case opAddr:
				v = b.u64() + u.bias
			case opConst1u:
				v = uint64(b.u8())
			case opConst1s:
				v = uint64(int64(int8(b.u8())))
			case opConst2u:
				v = uint64(b.u16())
			case opConst2s:
				v = uint64(int64(int16(b.u16())))
			case opConst4u:
				v = uint64(b.u32())
			case opConst4s:
				v = uint64(int64(int32(b.u32())))
			case opConst8u, opConst8s:
				v = b.u64()
			case opConstu:
				v = b.uleb()
			case opConsts:
				v = uint64(b.sleb())
			case opBregx:
				reg := b.uleb()
				off := b.sleb()
				if reg >= numRegs {
					return 0, fmt.Errorf("DWARF expression: register %d is not tracked", reg)
				}
				r, err := u.reg(int(reg))
				if err != nil {
					return 0, err
				}
				v = r + uint64(off)
			case opDup:
				if err := need(1); err != nil {
					return 0, err
				}
				v = st[n-1]
			case opOver:
				if err := need(2); err != nil {
					return 0, err
				}
				v = st[n-2]
			case opPick:
				i := int(b.u8())
				if err := need(i + 1); err != nil {
					return 0, err
				}
				v = st[n-1-i]
			case opDrop:
				if err := need(1); err != nil {
					return 0, err
				}
				n--
				pushes = false
			case opSwap:
				if err := need(2); err != nil {
					return 0, err
				}
				st[n-1], st[n-2] = st[n-2], st[n-1]
				pushes = false
			case opRot:
				if err := need(3); err != nil {
					return 0, err
				}
				st[n-1], st[n-2], st[n-3] = st[n-2], st[n-3], st[n-1]
				pushes = false
			case opDeref, opDerefSize:
				size := 8
				if op == opDerefSize {
					size = int(b.u8())
					if b.err == nil && (size == 0 || size > 8) {
						return 0, fmt.Errorf("DWARF expression: DW_OP_deref_size of %d bytes", size)
					}
				}
				if err := need(1); err != nil {
					return 0, err
				}
				if b.err != nil {
					return 0, b.err
				}
				x, err := u.read(st[n-1], size)
				if err != nil {
					return 0, err
				}
				st[n-1] = x
				pushes = false
			case opAbs, opNeg, opNot, opPlusUconst:
				var k uint64
				if op == opPlusUconst {
					k = b.uleb()
				}
				if err := need(1); err != nil {
					return 0, err
				}
				x := st[n-1]
				switch op {
				case opAbs:
					if int64(x) < 0 {
						x = -x
					}
				case opNeg:
					x = -x
				case opNot:
					x = ^x
				case opPlusUconst:
					x += k
				}
				st[n-1] = x
				pushes = false
			case opAnd, opDiv, opMinus, opMod, opMul, opOr, opPlus, opShl, opShr, opShra, opXor,
				opEq, opGe, opGt, opLe, opLt, opNe:
				if err := need(2); err != nil {
					return 0, err
				}
				x, y := st[n-2], st[n-1] // second, top
				var z uint64
				switch op {
				case opAnd:
					z = x & y
				case opOr:
					z = x | y
				case opXor:
					z = x ^ y
				case opPlus:
					z = x + y
				case opMinus:
					z = x - y
				case opMul:
					z = x * y
				case opDiv:
					if y == 0 {
						return 0, errors.New("DWARF expression: division by zero")
					}
					z = uint64(int64(x) / int64(y))
				case opMod:
					if y == 0 {
						return 0, errors.New("DWARF expression: division by zero")
					}
					z = x % y
				case opShl:
					z = x << y
				case opShr:
					z = x >> y
				case opShra:
					z = uint64(int64(x) >> y)
				case opEq:
					z = b2u(x == y)
				case opNe:
					z = b2u(x != y)
				case opGe:
					z = b2u(int64(x) >= int64(y))
				case opGt:
					z = b2u(int64(x) > int64(y))
				case opLe:
					z = b2u(int64(x) <= int64(y))
				case opLt:
					z = b2u(int64(x) < int64(y))
				}
				n--
				st[n-1] = z
				pushes = false
			case opSkip, opBra:
				off := int(int16(b.u16()))
				if b.err != nil {
					return 0, b.err
				}
				take := true
				if op == opBra {
					if err := need(1); err != nil {
						return 0, err
					}
					n--
					take = st[n] != 0
				}
				if take {
					to := b.off + off
					if to < 0 || to > len(b.data) {
						return 0, fmt.Errorf("DWARF expression: branch out of the expression")
					}
					b.off = to
				}
				pushes = false
			case opNop:
				pushes = false
			default:
				return 0, fmt.Errorf("DWARF expression: operation %#x is not supported", op)
			}
		}
		if b.err != nil {
			return 0, b.err
		}
		if pushes {
			if n == maxExprStack {
				return 0, errStackOverflow
			}
			st[n] = v
			n++
		}
	}
	if n == 0 {
		return 0, errStackUnderflow
	}
	return st[n-1], nil
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
