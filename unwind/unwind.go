package unwind

import (
	"encoding/binary"
	"fmt"
)

// Regs are the registers of the innermost frame of a thread, as
// PTRACE_GETREGS returns them. The fields are in DWARF x86-64 register
// order (0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15
// r8-r15, 16 the return address column, here the PC).
type Regs struct {
	RAX, RDX, RCX, RBX, RSI, RDI, RBP, RSP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP                                    uint64
}

func (r *Regs) array() [numRegs]uint64 {
	return [numRegs]uint64{r.RAX, r.RDX, r.RCX, r.RBX, r.RSI, r.RDI, r.RBP, r.RSP,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15, r.RIP}
}

// Module is an ELF file mapped in the target: its code is at run-time
// addresses [Start, End), and a run-time address minus Bias is the
// link-time address its Table uses. Table may be nil for code without call
// frame information (a JIT, a patch mapping): a PC there can only be
// unwound by the frame-pointer fallback, and otherwise ends the unwind with
// a *NoCFIError instead of being taken for the end of the stack.
type Module struct {
	Start, End uint64
	Bias       uint64
	Table      *Table
}

// Memory reads the target's memory. ReadAt fills all of p or fails.
type Memory interface {
	ReadAt(p []byte, addr uint64) error
}

// Frame is one frame of an unwound stack.
type Frame struct {
	// PC is the current instruction for frame 0 and for a frame
	// interrupted by a signal (Exact), and the return address otherwise.
	PC uint64

	// CFA is the canonical frame address of the frame: the stack pointer
	// of its caller at the call. It is 0 for the last frame when the
	// unwind stopped there for lack of call frame information.
	CFA uint64

	// Exact is true when PC is the next instruction to run rather than a
	// return address: frame 0, and the frame a signal interrupted.
	Exact bool

	// FramePointer is true when the frame was found by following the
	// saved frame pointer of the frame below it, which had no call frame
	// information. That guess can skip the caller of a function that had
	// not set up its frame (a leaf, or one stopped in its prologue): a
	// caller that must see every frame should not trust such a stack.
	FramePointer bool
}

// LookupPC is the address that identifies the frame's function: PC for an
// exact frame, and PC-1, inside the call instruction, for a return
// address, which can point past the end of a function that ends with a
// call that does not return.
func (f Frame) LookupPC() uint64 {
	if f.Exact {
		return f.PC
	}
	return f.PC - 1
}

// DefaultMaxFrames is the frame limit Unwind uses when given 0 or less.
const DefaultMaxFrames = 1024

// maxFPFrame is how far above the stack pointer the frame-pointer fallback
// accepts a frame pointer: more than any sane frame, less than a stack.
const maxFPFrame = 8 << 20

// Registers whose value a callee preserves (psABI 3.2.1): with no rule in a
// frame, the caller's value is the callee's. The others are lost.
const calleeSaved = 1<<3 | 1<<6 | 1<<12 | 1<<13 | 1<<14 | 1<<15

const allRegs = 1<<numRegs - 1

// unwinder is the state of one Unwind call: the registers of the frame
// being unwound, which of them are known, and reusable buffers.
type unwinder struct {
	mem   Memory
	regs  [numRegs]uint64
	valid uint32 // bit i: regs[i] is known
	bias  uint64 // of the module of the current frame, for DW_OP_addr
	sc    scratch
	word  [8]byte
}

// Unwind walks the stack of a thread stopped with registers regs, using the
// call frame information of modules and reading the stack through mem. It
// returns at most maxFrames frames (DefaultMaxFrames if maxFrames <= 0),
// innermost first.
//
// It ends without error at the outermost frame (a return address the
// rules mark undefined, as _start and the start of a thread do), at a
// return address of 0, or at a return address outside every module. When
// the stack goes on beyond maxFrames it returns ErrTruncated. Otherwise
// the frames found so far come with a *NoCFIError (no call frame
// information and no usable frame pointer for the last frame) or a
// *FrameError (the rules of the last frame could not be applied). A
// caller that must see every frame treats any error as an unknown stack.
//
// Unwind only reads: modules, their Tables and mem are shared safely
// between concurrent calls if mem is.
func Unwind(regs Regs, modules []Module, mem Memory, maxFrames int) ([]Frame, error) {
	if maxFrames <= 0 {
		maxFrames = DefaultMaxFrames
	}
	u := &unwinder{mem: mem, regs: regs.array(), valid: allRegs}
	frames := make([]Frame, 0, min(maxFrames, 32))
	pc, exact, viaFP := regs.RIP, true, false
	for {
		i := len(frames)
		lookup := pc
		if !exact {
			lookup = pc - 1
		}
		mod := findModule(modules, lookup)
		if i > 0 && mod == nil {
			return frames, nil // the stack ends, or goes on in unknown code
		}
		if i == maxFrames {
			return frames, ErrTruncated
		}
		frames = append(frames, Frame{PC: pc, Exact: exact, FramePointer: viaFP})
		u.regs[regRA], u.valid = pc, u.valid|1<<regRA

		var f fde
		found := false
		if mod != nil && mod.Table != nil {
			var err error
			f, found, err = mod.Table.find(lookup - mod.Bias)
			if !found && err == nil && !exact {
				// A signal trampoline entered by a return to its first
				// byte, without glibc's padding before it.
				if sf, ok, serr := mod.Table.find(pc - mod.Bias); ok && serr == nil && sf.cie.signal {
					f, found, lookup = sf, true, pc
				}
			}
			if err != nil {
				return frames, &FrameError{Index: i, PC: pc, Err: err}
			}
		}
		if !found {
			cfa, ok := u.framePointer(modules)
			if !ok {
				return frames, &NoCFIError{PC: pc}
			}
			frames[i].CFA = cfa
			pc, exact, viaFP = u.regs[regRA], false, true
			continue
		}
		u.bias = mod.Bias
		next, err := u.step(&f, lookup-mod.Bias)
		frames[i].CFA = next.cfa // known even if a register is not
		if err != nil {
			return frames, &FrameError{Index: i, PC: pc, Err: err}
		}
		if next.outermost || next.regs[regRA] == 0 {
			return frames, nil
		}
		if !f.cie.signal && next.regs[regRSP] <= u.regs[regRSP] {
			return frames, &FrameError{Index: i, PC: pc, Err: fmt.Errorf(
				"the stack pointer would move down from %#x to %#x: the stack or its rules are corrupt",
				u.regs[regRSP], next.regs[regRSP])}
		}
		u.regs, u.valid = next.regs, next.valid
		pc, exact, viaFP = next.regs[regRA], f.cie.signal, false
	}
}

func findModule(modules []Module, pc uint64) *Module {
	for i := range modules {
		if pc >= modules[i].Start && pc < modules[i].End {
			return &modules[i]
		}
	}
	return nil
}

// caller is the state of the caller of a frame.
type caller struct {
	cfa       uint64
	regs      [numRegs]uint64 // regs[regRA] is the caller's PC
	valid     uint32
	outermost bool // the return address is undefined: no caller
}

// step applies the rules of f at pc (a link-time address) to the current
// registers.
func (u *unwinder) step(f *fde, pc uint64) (caller, error) {
	var next caller
	r := f.cie.initial
	p := program{sec: f.sec, cie: f.cie, initial: &f.cie.initial}
	b := f.instr
	if err := p.run(&b, &r, f.begin, pc, &u.sc, false); err != nil {
		return next, err
	}
	switch r.cfa.kind {
	case cfaRegOffset:
		v, err := u.reg(int(r.cfa.reg))
		if err != nil {
			return next, fmt.Errorf("CFA: %w", err)
		}
		next.cfa = v + uint64(r.cfa.off)
	case cfaExpression:
		v, err := u.eval(r.cfa.expr, 0, false)
		if err != nil {
			return next, fmt.Errorf("CFA: %w", err)
		}
		next.cfa = v
	default:
		return next, fmt.Errorf("the rules define no CFA")
	}
	ra := f.cie.raReg
	switch r.regs[ra].kind {
	case ruleUndefined:
		next.outermost = true
		return next, nil
	case ruleUnspecified, ruleSameValue:
		return next, fmt.Errorf("the rules do not say where the return address is")
	}
	for i := range numRegs {
		rl := &r.regs[i]
		var v uint64
		switch rl.kind {
		case ruleUnspecified:
			if i == regRSP {
				v = next.cfa // the caller's stack pointer is the CFA
				break
			}
			if calleeSaved&(1<<i) != 0 && u.valid&(1<<i) != 0 {
				v = u.regs[i]
				break
			}
			continue
		case ruleUndefined:
			continue
		case ruleSameValue:
			if u.valid&(1<<i) == 0 {
				continue
			}
			v = u.regs[i]
		case ruleOffset:
			x, err := u.read(next.cfa+uint64(rl.off), 8)
			if err != nil {
				return next, fmt.Errorf("register %d: %w", i, err)
			}
			v = x
		case ruleValOffset:
			v = next.cfa + uint64(rl.off)
		case ruleRegister:
			x, err := u.reg(int(rl.reg))
			if err != nil {
				return next, fmt.Errorf("register %d: %w", i, err)
			}
			v = x
		case ruleExpression, ruleValExpression:
			x, err := u.eval(rl.expr, next.cfa, true)
			if err != nil {
				return next, fmt.Errorf("register %d: %w", i, err)
			}
			if rl.kind == ruleExpression {
				if x, err = u.read(x, 8); err != nil {
					return next, fmt.Errorf("register %d: %w", i, err)
				}
			}
			v = x
		}
		next.regs[i] = v
		next.valid |= 1 << i
	}
	if next.valid&(1<<ra) == 0 {
		return next, fmt.Errorf("the return address is unknown")
	}
	if ra != regRA {
		next.regs[regRA] = next.regs[ra]
		next.valid |= 1 << regRA
	}
	if next.valid&(1<<regRSP) == 0 {
		return next, fmt.Errorf("the caller's stack pointer is unknown")
	}
	return next, nil
}

// framePointer follows the frame-pointer chain from a frame that has no
// call frame information, if RBP looks like a frame on the stack: aligned,
// not far above the stack pointer, holding a saved RBP and a return
// address into a module. On success it makes the registers those of the
// caller and returns the frame's CFA.
func (u *unwinder) framePointer(modules []Module) (cfa uint64, ok bool) {
	const need = 1<<regRBP | 1<<regRSP
	if u.valid&need != need {
		return 0, false
	}
	fp, sp := u.regs[regRBP], u.regs[regRSP]
	if fp%8 != 0 || fp < sp || fp-sp > maxFPFrame || fp > ^uint64(0)-16 {
		return 0, false
	}
	savedFP, err := u.read(fp, 8)
	if err != nil {
		return 0, false
	}
	ra, err := u.read(fp+8, 8)
	if err != nil || ra == 0 || findModule(modules, ra-1) == nil {
		return 0, false
	}
	u.regs = [numRegs]uint64{}
	u.regs[regRBP], u.regs[regRSP], u.regs[regRA] = savedFP, fp+16, ra
	u.valid = 1<<regRBP | 1<<regRSP | 1<<regRA
	return fp + 16, true
}

// reg returns a register of the current frame, if it is known.
func (u *unwinder) reg(i int) (uint64, error) {
	if i < 0 || i >= numRegs {
		return 0, fmt.Errorf("register %d is not tracked", i)
	}
	if u.valid&(1<<i) == 0 {
		return 0, fmt.Errorf("register %d is unknown in this frame (the callee did not save it)", i)
	}
	return u.regs[i], nil
}

// read reads a little-endian value of size bytes (1 to 8) at addr.
func (u *unwinder) read(addr uint64, size int) (uint64, error) {
	p := u.word[:size]
	if err := u.mem.ReadAt(p, addr); err != nil {
		return 0, fmt.Errorf("reading %d bytes at %#x: %w", size, addr, err)
	}
	var w [8]byte
	copy(w[:], p)
	return binary.LittleEndian.Uint64(w[:]), nil
}
