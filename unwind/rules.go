package unwind

// numRegs is the number of DWARF registers an x86-64 frame is unwound
// with: rax, rdx, rcx, rbx, rsi, rdi, rbp, rsp, r8-r15 (0-15) and the
// return address column (16). Rules for higher registers (vector, x87,
// segment registers) are checked and ignored: they never take part in
// finding a caller.
const numRegs = 17

// maxRegNum bounds the register numbers accepted in rules; the x86-64
// psABI numbers its registers below 130.
const maxRegNum = 255

// maxStateDepth bounds DW_CFA_remember_state nesting.
const maxStateDepth = 64

// DWARF register numbers that matter to the unwinder.
const (
	regRBP = 6
	regRSP = 7
	regRA  = 16
)

type ruleKind uint8

// Register rules (DWARF 5 section 6.4.1). The zero value is no rule at
// all: the psABI then says callee-saved registers keep their value and the
// others are lost.
const (
	ruleUnspecified ruleKind = iota
	ruleUndefined
	ruleSameValue
	ruleOffset        // saved at CFA+off
	ruleValOffset     // the value is CFA+off
	ruleRegister      // the value is in register reg
	ruleExpression    // saved at the address expr computes, CFA pushed first
	ruleValExpression // the value is what expr computes, CFA pushed first
)

// CFA rules use the same type: ruleUnspecified (not defined yet),
// cfaRegOffset (reg+off) or cfaExpression (expr, nothing pushed).
const (
	cfaRegOffset  = ruleRegister
	cfaExpression = ruleExpression
)

type rule struct {
	kind ruleKind
	reg  uint8
	off  int64
	expr []byte
}

// row is one row of the call frame table: how to find the CFA and each
// register of the caller.
type row struct {
	cfa  rule
	regs [numRegs]rule
}

// scratch is reused working memory: the DW_CFA_remember_state stack.
type scratch struct {
	stack []row
}

// program runs call frame instructions for one CIE or FDE.
type program struct {
	sec     *section
	cie     *cie
	initial *row // the CIE's rules, for DW_CFA_restore; nil in a CIE
	setLoc  bool // a DW_CFA_set_loc ran (an absolute address in the instructions)
}

// Call frame instruction opcodes (DWARF 5 section 7.24, and GNU's).
const (
	cfaNop                       = 0x00
	cfaSetLoc                    = 0x01
	cfaAdvanceLoc1               = 0x02
	cfaAdvanceLoc2               = 0x03
	cfaAdvanceLoc4               = 0x04
	cfaOffsetExtended            = 0x05
	cfaRestoreExtended           = 0x06
	cfaUndefined                 = 0x07
	cfaSameValue                 = 0x08
	cfaRegister                  = 0x09
	cfaRememberState             = 0x0a
	cfaRestoreState              = 0x0b
	cfaDefCFA                    = 0x0c
	cfaDefCFARegister            = 0x0d
	cfaDefCFAOffset              = 0x0e
	cfaDefCFAExpression          = 0x0f
	cfaExpressionOp              = 0x10
	cfaOffsetExtendedSf          = 0x11
	cfaDefCFASf                  = 0x12
	cfaDefCFAOffsetSf            = 0x13
	cfaValOffset                 = 0x14
	cfaValOffsetSf               = 0x15
	cfaValExpression             = 0x16
	cfaGNUArgsSize               = 0x2e
	cfaGNUNegOffsetExtended      = 0x2f
	cfaHighAdvanceLoc            = 1 // high two bits
	cfaHighOffset                = 2
	cfaHighRestore               = 3
	cfaHighShift                 = 6
	cfaLowMask              byte = 0x3f
)

// run executes the instructions in b on r, for the location target: it
// stops at the end of the instructions or where the next row would start
// after target. loc is the location of the first row. check also validates
// the DWARF expressions (Load does; Unwind relies on it).
func (p *program) run(b *buf, r *row, loc, target uint64, sc *scratch, check bool) error {
	s, c := p.sec, p.cie
	base := len(sc.stack)
	defer func() { sc.stack = sc.stack[:base] }()
	for b.left() > 0 && b.err == nil {
		at := b.pos()
		op := b.u8()
		switch op >> cfaHighShift {
		case cfaHighAdvanceLoc:
			done, err := p.advance(uint64(op&cfaLowMask), &loc, target, at)
			if done || err != nil {
				return err
			}
			continue
		case cfaHighOffset:
			if err := p.set(r, uint64(op&cfaLowMask), rule{kind: ruleOffset, off: int64(b.uleb()) * c.dataAlign}, at); err != nil {
				return err
			}
			continue
		case cfaHighRestore:
			if err := p.restore(r, uint64(op&cfaLowMask), at); err != nil {
				return err
			}
			continue
		}
		switch op {
		case cfaNop:
		case cfaSetLoc:
			if p.initial == nil {
				return s.errorf(at, "DW_CFA_set_loc in a CIE")
			}
			p.setLoc = true
			next := b.pointer(c.fdeEnc, 0, false)
			if b.err != nil {
				return b.err
			}
			if next < loc {
				return s.errorf(at, "DW_CFA_set_loc moves back from %#x to %#x", loc, next)
			}
			if next > target {
				return nil
			}
			loc = next
		case cfaAdvanceLoc1, cfaAdvanceLoc2, cfaAdvanceLoc4:
			var delta uint64
			switch op {
			case cfaAdvanceLoc1:
				delta = uint64(b.u8())
			case cfaAdvanceLoc2:
				delta = uint64(b.u16())
			default:
				delta = uint64(b.u32())
			}
			if b.err != nil {
				return b.err
			}
			done, err := p.advance(delta, &loc, target, at)
			if done || err != nil {
				return err
			}
		case cfaOffsetExtended, cfaOffsetExtendedSf, cfaValOffset, cfaValOffsetSf, cfaGNUNegOffsetExtended:
			reg := b.uleb()
			var off int64
			switch op {
			case cfaOffsetExtendedSf, cfaValOffsetSf:
				off = b.sleb() * c.dataAlign
			case cfaGNUNegOffsetExtended:
				off = -int64(b.uleb()) * c.dataAlign
			default:
				off = int64(b.uleb()) * c.dataAlign
			}
			kind := ruleOffset
			if op == cfaValOffset || op == cfaValOffsetSf {
				kind = ruleValOffset
			}
			if err := p.set(r, reg, rule{kind: kind, off: off}, at); err != nil {
				return err
			}
		case cfaRestoreExtended:
			if err := p.restore(r, b.uleb(), at); err != nil {
				return err
			}
		case cfaUndefined:
			if err := p.set(r, b.uleb(), rule{kind: ruleUndefined}, at); err != nil {
				return err
			}
		case cfaSameValue:
			if err := p.set(r, b.uleb(), rule{kind: ruleSameValue}, at); err != nil {
				return err
			}
		case cfaRegister:
			reg, src := b.uleb(), b.uleb()
			if b.err != nil {
				return b.err
			}
			if src > maxRegNum {
				return s.errorf(at, "register %d out of range", src)
			}
			if src >= numRegs && reg < numRegs {
				return s.errorf(at, "register %d saved in register %d is not supported", reg, src)
			}
			if err := p.set(r, reg, rule{kind: ruleRegister, reg: uint8(src)}, at); err != nil {
				return err
			}
		case cfaRememberState:
			if p.initial == nil {
				return s.errorf(at, "DW_CFA_remember_state in a CIE")
			}
			if len(sc.stack)-base >= maxStateDepth {
				return s.errorf(at, "DW_CFA_remember_state nested more than %d deep", maxStateDepth)
			}
			sc.stack = append(sc.stack, *r)
		case cfaRestoreState:
			if len(sc.stack) <= base {
				return s.errorf(at, "DW_CFA_restore_state without DW_CFA_remember_state")
			}
			*r = sc.stack[len(sc.stack)-1]
			sc.stack = sc.stack[:len(sc.stack)-1]
		case cfaDefCFA, cfaDefCFASf:
			reg := b.uleb()
			var off int64
			if op == cfaDefCFA {
				off = int64(b.uleb())
			} else {
				off = b.sleb() * c.dataAlign
			}
			if b.err != nil {
				return b.err
			}
			if reg >= numRegs {
				return s.errorf(at, "CFA based on register %d is not supported", reg)
			}
			r.cfa = rule{kind: cfaRegOffset, reg: uint8(reg), off: off}
		case cfaDefCFARegister:
			reg := b.uleb()
			if b.err != nil {
				return b.err
			}
			if r.cfa.kind != cfaRegOffset {
				return s.errorf(at, "DW_CFA_def_cfa_register when the CFA is not register+offset")
			}
			if reg >= numRegs {
				return s.errorf(at, "CFA based on register %d is not supported", reg)
			}
			r.cfa.reg = uint8(reg)
		case cfaDefCFAOffset, cfaDefCFAOffsetSf:
			var off int64
			if op == cfaDefCFAOffset {
				off = int64(b.uleb())
			} else {
				off = b.sleb() * c.dataAlign
			}
			if b.err != nil {
				return b.err
			}
			if r.cfa.kind != cfaRegOffset {
				return s.errorf(at, "DW_CFA_def_cfa_offset when the CFA is not register+offset")
			}
			r.cfa.off = off
		case cfaDefCFAExpression:
			expr, err := p.expr(b, check)
			if err != nil {
				return err
			}
			r.cfa = rule{kind: cfaExpression, expr: expr}
		case cfaExpressionOp, cfaValExpression:
			reg := b.uleb()
			expr, err := p.expr(b, check)
			if err != nil {
				return err
			}
			kind := ruleExpression
			if op == cfaValExpression {
				kind = ruleValExpression
			}
			if err := p.set(r, reg, rule{kind: kind, expr: expr}, at); err != nil {
				return err
			}
		case cfaGNUArgsSize:
			b.uleb() // the size of outgoing arguments: not needed to unwind
		default:
			return s.errorf(at, "unknown call frame instruction %#x", op)
		}
	}
	return b.err
}

// advance moves loc on by delta code units; done is true when the new row
// starts after target, so the current row is the one for target.
func (p *program) advance(delta uint64, loc *uint64, target uint64, at int) (done bool, err error) {
	if p.initial == nil {
		return false, p.sec.errorf(at, "DW_CFA_advance_loc in a CIE")
	}
	ca := p.cie.codeAlign
	if ca != 0 && delta > (^uint64(0)-*loc)/ca {
		return false, p.sec.errorf(at, "location overflows")
	}
	next := *loc + delta*ca
	if next > target {
		return true, nil
	}
	*loc = next
	return false, nil
}

// set gives register reg the rule rl; rules for registers the unwinder does
// not track are dropped.
func (p *program) set(r *row, reg uint64, rl rule, at int) error {
	if reg > maxRegNum {
		return p.sec.errorf(at, "register %d out of range", reg)
	}
	if reg < numRegs {
		r.regs[reg] = rl
	}
	return nil
}

func (p *program) restore(r *row, reg uint64, at int) error {
	if p.initial == nil {
		return p.sec.errorf(at, "DW_CFA_restore in a CIE")
	}
	if reg > maxRegNum {
		return p.sec.errorf(at, "register %d out of range", reg)
	}
	if reg < numRegs {
		r.regs[reg] = p.initial.regs[reg]
	}
	return nil
}

// expr reads the block of a DW_CFA_*expression instruction.
func (p *program) expr(b *buf, check bool) ([]byte, error) {
	n := b.uleb()
	at := b.pos()
	e := b.bytes(n)
	if b.err != nil {
		return nil, b.err
	}
	if check {
		if off, err := checkExpr(e); err != nil {
			return nil, p.sec.errorf(at+off, "DWARF expression: %v", err)
		}
	}
	return e, nil
}
