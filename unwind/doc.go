// Package unwind walks the stacks of stopped x86-64 Linux threads with the
// DWARF call frame information (CFI) of the ELF files they run, so that
// code built without frame pointers (gcc -O2) is unwound exactly.
//
// # Place in the flow
//
// Before the engine replaces a function it stops every thread of the
// target and must know that none of them has that function's code on its
// stack, as its PC or as any return address. The engine reads each
// thread's registers, describes the target's mapped ELF files as Modules
// (each with a Table loaded once per file) and calls Unwind. This package
// never stops, traces or signals anything: it parses files and reads
// memory through the Memory it is given.
//
//	ELF file ───────Load──▶ *Table ─┐
//	/proc/PID/maps ───────▶ []Module ├─Unwind─▶ []Frame, and an error if the stack is not fully known
//	PTRACE_GETREGS ───────▶ Regs ────┤
//	process_vm_readv ─────▶ Memory ──┘
//
// Load is parsing of untrusted input and needs no privileges. A Table is
// inert, read-only data, safe to share between goroutines.
//
// # Use
//
//	tab, err := unwind.Load(f) // once per file; for the vdso, f = elf.NewFile(bytes.NewReader(image))
//	// For each file mapped by the target, with start = the address of the
//	// mapping of file offset 0 and vaddr = p_vaddr of the PT_LOAD at file
//	// offset 0, rounded down to the page:
//	mods = append(mods, unwind.Module{Start: lo, End: hi, Bias: start - vaddr, Table: tab})
//	// For each thread (r from unix.PtraceGetRegs):
//	frames, err := unwind.Unwind(unwind.Regs{RAX: r.Rax, RDX: r.Rdx, ..., RSP: r.Rsp, RIP: r.Rip}, mods, mem, 0)
//	for _, f := range frames { fn := symbolize(f.LookupPC()) ... }
//	if err != nil { /* the stack is not fully known: treat the thread as busy */ }
//
// # Tables
//
// Load reads .eh_frame, looked up through the binary search table of
// .eh_frame_hdr when that table covers every FDE (else through an index it
// sorts itself), and .debug_frame, used for addresses no .eh_frame FDE
// covers. An image without section headers (read from memory) is read
// through its PT_GNU_EH_FRAME program header. Load parses and checks
// everything at once: every CIE and FDE, every instruction, every
// expression. Malformed or unsupported input is a *FormatError, never a
// panic (the parser is fuzzed), and memory use is bounded by the input. A
// file without call frame information gives an empty Table.
//
// Supported call frame instructions: DW_CFA_advance_loc, advance_loc1/2/4,
// set_loc, def_cfa, def_cfa_sf, def_cfa_register, def_cfa_offset,
// def_cfa_offset_sf, def_cfa_expression, offset, offset_extended,
// offset_extended_sf, val_offset, val_offset_sf, restore,
// restore_extended, undefined, same_value, register, expression,
// val_expression, remember_state and restore_state (which also save and
// restore the CFA rule, as gcc expects), nop, GNU_args_size (ignored) and
// GNU_negative_offset_extended. Rules for registers above 16 (vector, x87,
// segment registers) are checked and ignored.
//
// Supported DWARF expression operations (in def_cfa_expression,
// expression and val_expression): lit0-31, const1u-const8s, constu,
// consts, addr (plus the module's bias), breg0-31 and bregx of registers
// 0-16 (16 is the frame's own PC, as in the PLT's CFA rule), deref,
// deref_size, dup, drop, over, pick, swap, rot, abs, and, div, minus, mod,
// mul, neg, not, or, plus, plus_uconst, shl, shr, shra, xor, eq, ge, gt,
// le, lt, ne (signed comparisons), bra, skip and nop. Evaluation is
// bounded (64 stack entries, 1000 operations).
//
// CIE versions 1 and 3 (and 4 in .debug_frame) with augmentations "",
// "z" and the letters R (FDE pointer encoding), P (personality, skipped),
// L (LSDA, skipped) and S (signal frame); unknown letters after "z" are
// skipped by the augmentation length. Pointer encodings: absptr, uleb128,
// udata2/4/8, sleb128, sdata2/4/8, pcrel, datarel (in .eh_frame_hdr), and
// indirect for personality pointers, which are never followed.
//
// # Unwinding a frame
//
// For each frame Unwind finds the module that maps the PC and the FDE that
// covers it. For a return address it looks up PC-1, inside the call (a
// call can be the last instruction of a function); for frame 0, and for a
// frame interrupted by a signal (the caller of a frame whose CIE has the S
// augmentation, such as glibc's __restore_rt), it looks up the PC itself
// (Frame.Exact). It runs the CIE's and FDE's instructions up to that
// address, computes the CFA and recovers the caller's registers. A
// register without a rule keeps its value if the psABI makes it
// callee-saved (rbx, rbp, r12-r15) and is unknown otherwise; the caller's
// stack pointer is the CFA unless a rule says otherwise. A rule that needs
// an unknown register is an error, not a guess.
//
// # Where an unwind ends
//
// Unwind returns without error at the outermost frame: a return address
// that the rules mark undefined (_start, and the start of every thread in
// glibc's clone and clone3), a return address of 0, or a return address
// outside every module (as the outermost frame of a libc that does not
// mark it). So the caller decides what unknown code is: a mapping that
// holds code but has no call frame information (JIT code, a patch mapping)
// should be given as a Module with a nil Table, so that reaching it is a
// *NoCFIError and not the end of the stack.
//
// When a PC has no FDE, Unwind follows the frame-pointer chain if RBP
// looks like a frame on the stack: 8-aligned, at most 8 MiB above the
// stack pointer, holding a return address into a module. Frames found
// that way are marked Frame.FramePointer: the guess is right for code
// built with frame pointers, but can skip a caller when the code without
// CFI had not set up its frame. If RBP does not look like a frame, the
// frames so far come with a *NoCFIError.
//
// Other failures (an unreadable stack, an unknown register, a stack
// pointer that would move down) give a *FrameError, and a stack with more
// than maxFrames frames gives ErrTruncated. Every error means "the stack
// is not fully known"; hotpatch treats such a thread as possibly running
// any function.
//
// # Not supported
//
// Other architectures, 32-bit and relocatable (ET_REL) files, the textrel,
// funcrel and aligned pointer encodings, datarel pointers in .eh_frame,
// DWARF expression operations that only make sense in debugging
// information (DW_OP_call*, DW_OP_push_object_address,
// DW_OP_call_frame_cfa, register locations, typed stack operations),
// DW_CFA_GNU_window_save and other architectures' instructions.
package unwind
