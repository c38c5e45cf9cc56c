package builder

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// Functions that differ only in a line number or a build stamp.
//
// A fix that adds lines shifts every __LINE__ below it: an assert() or a
// logging call further down passes another constant, and nothing else in
// its function changed. Such a function is left out of the patch by default
// (kpatch does the same), and the build says so (Report.LeftOut). A
// difference counts as a line number only where the code shows it is one:
//
//   - an immediate loaded into an argument register (mov $N, %edx) among
//     the loads of a call's arguments, when the argument just before it is a
//     string literal naming a source file (__FILE__: "main.c", "src/x.cc"):
//     f(…, __FILE__, __LINE__, …), as assert's __assert_fail(expr, file,
//     line, func) and most logging macros call;
//   - with the DWARF of both builds, an immediate loaded into an argument
//     register that the line tables show to be the line of its own
//     statement, moved by as much as that statement (a __LINE__ passed
//     alone: accounting(parser, tok, __LINE__); see linetable.go);
//   - a string literal that differs only in the number after
//     "<file>.<ext>:" ("main.c:42" against "main.c:45");
//
// and as a build stamp, a string literal that differs only inside a
// __DATE__ ("Dec  5 2026") or __TIME__ ("13:00:23") stamp. Any other
// difference, such as a changed limit passed to a call, keeps the function
// in the patch. Options.IncludeLineChanges keeps them all.

// LeftOut is a function that differs between the builds but was left out of
// the patch, and why.
type LeftOut struct {
	Function string // as in messages: "file.c:name" for statics
	Reason   string // e.g. "only line numbers changed (__LINE__: 41 -> 44)"
	// Data marks a data object (Function is then its name) whose initial
	// value differs only in a stamp: the running value is kept, always.
	Data bool
}

// Report receives what a build decided beyond the patch itself.
type Report struct {
	LeftOut []LeftOut
}

var (
	fileLine  = regexp.MustCompile(`[A-Za-z0-9_./+-]+\.(c|h|cc|cpp|cxx|hh|hpp|hxx|C|H):$`)
	dateStamp = regexp.MustCompile(`(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 0-3][0-9] [0-9]{4}`)
	timeStamp = regexp.MustCompile(`[0-2][0-9]:[0-5][0-9]:[0-5][0-9]`)
	digits    = regexp.MustCompile(`[0-9]+`)
	srcFile   = regexp.MustCompile(`\.(c|h|cc|cpp|cxx|hh|hpp|hxx|C|H)$`)
)

// argIndex returns the position (0 for the first) of an argument register
// of the x86-64 SysV ABI, in its 32- or 64-bit form, or -1.
func argIndex(r x86asm.Reg) int {
	switch r {
	case x86asm.EDI, x86asm.RDI:
		return 0
	case x86asm.ESI, x86asm.RSI:
		return 1
	case x86asm.EDX, x86asm.RDX:
		return 2
	case x86asm.ECX, x86asm.RCX:
		return 3
	case x86asm.R8L, x86asm.R8:
		return 4
	case x86asm.R9L, x86asm.R9:
		return 5
	}
	return -1
}

// fileArg is a __FILE__ string passed to a call: the instruction that
// loads it and the argument position it loads.
type fileArg struct {
	insn, arg int
}

// lineOnly reports whether the original o and the fixed f differ only in
// line numbers or build stamps, with a description of what differed.
func (b *builder) lineOnly(o, f *symbol) (bool, string) {
	if o.size != f.size {
		return false, ""
	}
	co, _ := b.orig.bytesAt(o.addr, o.size)
	cf, _ := b.fixed.bytesAt(f.addr, f.size)
	fo, err := b.codeFields(b.orig, o)
	if err != nil {
		return false, ""
	}
	ff, err := b.codeFields(b.fixed, f)
	if err != nil || len(fo) != len(ff) {
		return false, ""
	}
	insns, err := decodeFunc(f.display(), cf)
	if err != nil {
		return false, ""
	}
	// Fields: equivalent, or file-name strings that differ only in a line
	// number or a stamp.
	var notes []string
	var fileArgs []fileArg // loads of __FILE__ strings into argument registers
	for i := range ff {
		a, c := fo[i], ff[i]
		if a.off != c.off || a.typ != c.typ || a.keep != c.keep || a.ext != c.ext {
			return false, ""
		}
		ro, err1 := b.orig.refOf(a, "line check")
		rf, err2 := b.fixed.refOf(c, "line check")
		if err1 != nil || err2 != nil {
			return false, ""
		}
		if s := b.fixed.stringAt(rf); s != "" && srcFile.MatchString(s) {
			if k := insnIndex(insns, int(c.off)); k >= 0 {
				if a, at := loadedArg(insns, k, cf); a >= 0 {
					fileArgs = append(fileArgs, fileArg{at, a})
				}
			}
		}
		if same, err := b.equivalent(ro, rf); err == nil && same {
			continue
		}
		so, sf := b.orig.stringAt(ro), b.fixed.stringAt(rf)
		if so == "" || sf == "" {
			debugf("%s: at +%#x %v against %v: not a line number", f.display(), c.off, ro, rf)
			return false, ""
		}
		note, ok := stampOrLine(so, sf)
		if !ok {
			return false, ""
		}
		notes = append(notes, note)
	}
	// Bytes outside the fields: only immediates of argument loads next to
	// a __FILE__ argument.
	mo, mf := bytes.Clone(co), bytes.Clone(cf)
	for _, fl := range ff {
		if !fl.keep {
			n := uint64(fl.typ.Size())
			clear(mo[fl.off:min(fl.off+n, uint64(len(mo)))])
			clear(mf[fl.off:min(fl.off+n, uint64(len(mf)))])
		}
	}
	var rows linePair // the line tables' rows of o and f, read when needed
	rowsRead := false
	for k := 0; k < len(insns); k++ {
		in := insns[k]
		if bytes.Equal(mo[in.off:in.off+in.len], mf[in.off:in.off+in.len]) {
			continue
		}
		io, erro := x86asm.Decode(co[in.off:in.off+in.len], 64)
		inf, errf := x86asm.Decode(cf[in.off:in.off+in.len], 64)
		if erro != nil || errf != nil || io.Op != x86asm.MOV || inf.Op != x86asm.MOV || io.Len != inf.Len {
			return false, ""
		}
		ro, okO := io.Args[0].(x86asm.Reg)
		rf, okF := inf.Args[0].(x86asm.Reg)
		vo, okVO := io.Args[1].(x86asm.Imm)
		vf, okVF := inf.Args[1].(x86asm.Imm)
		if !okO || !okF || !okVO || !okVF || ro != rf || argIndex(ro) < 0 || vo <= 0 || vf <= 0 || vo > 1_000_000 || vf > 1_000_000 {
			return false, ""
		}
		// The immediate bytes are the instruction's last four.
		if !bytes.Equal(co[in.off:in.off+in.len-4], cf[in.off:in.off+in.len-4]) ||
			binary.LittleEndian.Uint32(co[in.off+in.len-4:]) != uint32(vo) {
			return false, ""
		}
		if argIndex(ro) >= 1 && fileArgNear(insns, k, argIndex(ro), cf, fileArgs) {
			notes = append(notes, fmt.Sprintf("__LINE__ %d -> %d", vo, vf))
			continue
		}
		// No __FILE__ beside it: the line tables must say it is a line.
		if !rowsRead {
			rows, rowsRead = b.alignedRows(o, f), true
		}
		call := -1
		if c := callAfter(insns, k, cf); c >= 0 && !regUsed(insns[k+1:c], cf, argIndex(ro)) {
			call = insns[c].off
		}
		if !b.lineByDWARF(o, f, rows, in.off, call, int64(vo), int64(vf)) {
			debugf("%s: immediate %d -> %d at +%#x is not a line number (line tables read: %v)", f.display(), vo, vf, in.off, rows.ok)
			return false, ""
		}
		notes = append(notes, fmt.Sprintf("__LINE__ %d -> %d (line table)", vo, vf))
	}
	if len(notes) == 0 {
		return false, ""
	}
	return true, strings.Join(notes, ", ")
}

// fileArgNear reports whether instruction k, which loads argument arg, is
// among the argument loads of a call whose previous argument is a __FILE__
// string: f(__FILE__, __LINE__, …) is the one convention that says a
// number is a line. A limit or size passed anywhere else is not taken for
// one.
func fileArgNear(insns []insn, k, arg int, code []byte, fileArgs []fileArg) bool {
	isCall := func(in insn) bool { return isCallInsn(in, code) }
	lo, hi := k, k
	for lo > 0 && k-lo < 12 && !isCall(insns[lo-1]) {
		lo--
	}
	for hi < len(insns)-1 && hi-k < 12 && !isCall(insns[hi]) {
		hi++
	}
	if !isCall(insns[hi]) {
		return false
	}
	for _, fa := range fileArgs {
		if fa.insn >= lo && fa.insn < hi && fa.arg == arg-1 {
			return true
		}
	}
	return false
}

// isCallInsn reports whether in is a call or a tail call: call rel32,
// jmp rel32, or call through a register or memory.
func isCallInsn(in insn, code []byte) bool {
	c := code[in.off]
	return c == 0xe8 || c == 0xe9 || (c == 0xff && in.len >= 2 && (code[in.off+1]>>3)&7 == 2)
}

// callAfter returns the index of the call that the argument load k feeds:
// the first call among the next 12 instructions, or -1.
func callAfter(insns []insn, k int, code []byte) int {
	for j := k + 1; j < len(insns) && j <= k+12; j++ {
		if isCallInsn(insns[j], code) {
			return j
		}
	}
	return -1
}

// argFamily returns the argument position of a register of the x86-64
// SysV ABI in any width (%dil, %di, %edi, %rdi), or -1.
func argFamily(r x86asm.Reg) int {
	switch r {
	case x86asm.DIB, x86asm.DI:
		return 0
	case x86asm.SIB, x86asm.SI:
		return 1
	case x86asm.DL, x86asm.DH, x86asm.DX:
		return 2
	case x86asm.CL, x86asm.CH, x86asm.CX:
		return 3
	case x86asm.R8B, x86asm.R8W:
		return 4
	case x86asm.R9B, x86asm.R9W:
		return 5
	}
	return argIndex(r)
}

// regUsed reports whether any of insns reads or writes argument register
// arg (in any width, also as an address): then a load into it before them
// does not simply feed the call after them.
func regUsed(insns []insn, code []byte, arg int) bool {
	for _, in := range insns {
		d, err := x86asm.Decode(code[in.off:in.off+in.len], 64)
		if err != nil {
			return true
		}
		for _, a := range d.Args {
			switch a := a.(type) {
			case x86asm.Reg:
				if argFamily(a) == arg {
					return true
				}
			case x86asm.Mem:
				if argFamily(a.Base) == arg || argFamily(a.Index) == arg {
					return true
				}
			}
		}
	}
	return false
}

// loadedArg returns the argument position that instruction k loads, and
// the instruction that finally does: at -O0 gcc loads into %rax and then
// moves it to the argument register.
func loadedArg(insns []insn, k int, code []byte) (arg, at int) {
	in, err := x86asm.Decode(code[insns[k].off:insns[k].off+insns[k].len], 64)
	if err != nil {
		return -1, k
	}
	r, ok := in.Args[0].(x86asm.Reg)
	if !ok {
		return -1, k
	}
	if a := argIndex(r); a >= 0 {
		return a, k
	}
	for j := k + 1; j < len(insns) && j <= k+3; j++ {
		mv, err := x86asm.Decode(code[insns[j].off:insns[j].off+insns[j].len], 64)
		if err != nil || mv.Op != x86asm.MOV {
			continue
		}
		if src, ok := mv.Args[1].(x86asm.Reg); ok && src == r {
			if dst, ok := mv.Args[0].(x86asm.Reg); ok && argIndex(dst) >= 0 {
				return argIndex(dst), j
			}
		}
	}
	return -1, k
}

// insnIndex returns the index of the instruction that holds byte off, or -1.
func insnIndex(insns []insn, off int) int {
	for i, in := range insns {
		if off >= in.off && off < in.off+in.len {
			return i
		}
	}
	return -1
}

// stringAt returns the C string a read-only reference points to, or "" if
// it is not a string literal.
func (m *module) stringAt(r ref) string {
	if r.kind != refRO || r.off < 0 {
		return ""
	}
	data, ok := m.bytesAt(r.start, r.end-r.start)
	if !ok || !looksLikeString(data) || r.off >= int64(len(data)) {
		return ""
	}
	s := cstring(data[r.off:])
	if len(s) == 0 || s[len(s)-1] != 0 {
		return ""
	}
	return string(s[:len(s)-1])
}

// stampOrLine reports whether two string literals differ only in build
// stamps or in line numbers after a file name, and describes how.
func stampOrLine(so, sf string) (string, bool) {
	stamp := false
	// Build stamps first: replace each by a placeholder on both sides.
	for _, re := range []*regexp.Regexp{dateStamp, timeStamp} {
		mo, mf := re.FindAllString(so, -1), re.FindAllString(sf, -1)
		if len(mo) != len(mf) {
			return "", false
		}
		for k := range mo {
			stamp = stamp || mo[k] != mf[k]
		}
		so, sf = re.ReplaceAllString(so, "\x00"), re.ReplaceAllString(sf, "\x00")
	}
	if so == sf {
		return "build stamp", stamp
	}
	// Line numbers: the same text around the numbers, and every number that
	// differs follows "<file>.<ext>:".
	if digits.ReplaceAllString(so, "#") != digits.ReplaceAllString(sf, "#") {
		return "", false
	}
	io, iff := digits.FindAllStringIndex(so, -1), digits.FindAllStringIndex(sf, -1)
	var lines []string
	for k := range io {
		a, c := so[io[k][0]:io[k][1]], sf[iff[k][0]:iff[k][1]]
		if a == c {
			continue
		}
		if !fileLine.MatchString(so[:io[k][0]]) {
			return "", false
		}
		lines = append(lines, fmt.Sprintf("%q -> %q", so[:io[k][1]], sf[:iff[k][1]]))
	}
	if len(lines) == 0 {
		return "", false
	}
	note := "line in " + strings.Join(lines, ", ")
	if stamp {
		note += ", build stamp"
	}
	return note, true
}

// noChange is ErrNoChange, saying which functions were left out, if any.
func (b *builder) noChange() error {
	if len(b.leftOut) == 0 {
		return ErrNoChange
	}
	var names []string
	for _, l := range b.leftOut {
		names = append(names, l.Function)
	}
	return fmt.Errorf("%w: %s differ only in line numbers or build stamps, which are left out; build with --include-line-changes to carry them", ErrNoChange, strings.Join(names, ", "))
}

// stampsOnly reports whether two initial values of a data object differ
// only in pointers to string literals that differ only in build stamps or
// line numbers.
func (b *builder) stampsOnly(bo, bf []byte, fo, ff []field) (string, bool) {
	if len(bo) != len(bf) || len(fo) != len(ff) {
		return "", false
	}
	mo, mf := bytes.Clone(bo), bytes.Clone(bf)
	var notes []string
	for i := range ff {
		if fo[i].off != ff[i].off || fo[i].typ != ff[i].typ || fo[i].keep != ff[i].keep || fo[i].ext != ff[i].ext {
			return "", false
		}
		if ff[i].keep {
			continue
		}
		n := min(ff[i].off+uint64(ff[i].typ.Size()), uint64(len(mf)))
		clear(mo[fo[i].off:n])
		clear(mf[ff[i].off:n])
		ro, err1 := b.orig.refOf(fo[i], "stamp check")
		rf, err2 := b.fixed.refOf(ff[i], "stamp check")
		if err1 != nil || err2 != nil {
			return "", false
		}
		if same, err := b.equivalent(ro, rf); err == nil && same {
			continue
		}
		so, sf := b.orig.stringAt(ro), b.fixed.stringAt(rf)
		if so == "" || sf == "" {
			return "", false
		}
		note, ok := stampOrLine(so, sf)
		if !ok {
			return "", false
		}
		notes = append(notes, note)
	}
	if !bytes.Equal(mo, mf) || len(notes) == 0 {
		return "", false
	}
	return strings.Join(notes, ", "), true
}
