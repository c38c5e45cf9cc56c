package builder

import (
	"debug/elf"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/hotpatch/hotpatch/patch"
)

// callGraph is what the original build says about who runs each function:
// direct calls and jumps between functions (from the relocations of their
// code), functions whose address is used otherwise (callbacks, tables,
// thread start routines: they may run at any time), and the constructors
// the dynamic loader runs at start-up.
type callGraph struct {
	calls       map[*symbol][]edge   // caller -> direct calls and jumps it makes
	callers     map[*symbol]int      // number of direct call or jump sites
	taken       map[*symbol]string   // address used other than by a direct call: where
	ctors       map[*symbol]string   // run by the dynamic loader at start-up: section
	threadStart map[*symbol]string   // address taken by a function that calls pthread_create: that function
	extCalls    map[*symbol][]string // external functions each calls or jumps to
	exported    map[string]bool      // functions of the module's .dynsym: callable from outside
	incomplete  bool                 // a reference could not be classified: an edge may be missing
}

// edge is one direct call or jump: its callee and the offset of its field in
// the caller.
type edge struct {
	to  *symbol
	off uint64
}

// isDirectBranch reports whether the 4-byte field at off of code is the
// displacement of a call, jmp or jcc rel32 (and not of a RIP-relative
// memory operand, whose ModRM byte precedes it and is at most 0x3d).
func isDirectBranch(code []byte, off uint64) bool {
	if off < 1 {
		return false
	}
	op := code[off-1]
	if op == 0xe8 || op == 0xe9 {
		return true
	}
	return off >= 2 && code[off-2] == 0x0f && op&0xf0 == 0x80
}

// callGraph reads the call graph of the original build.
func (b *builder) callGraph() (*callGraph, error) {
	m := b.orig
	g := &callGraph{calls: map[*symbol][]edge{}, callers: map[*symbol]int{}, taken: map[*symbol]string{},
		ctors: map[*symbol]string{}, threadStart: map[*symbol]string{}, extCalls: map[*symbol][]string{}}
	var err error
	if g.exported, err = exportedFuncs(m.path); err != nil {
		return nil, err
	}
	for _, fn := range m.funcs {
		fields, err := b.codeFields(m, fn)
		if err != nil {
			return nil, err
		}
		code, _ := m.bytesAt(fn.addr, fn.size)
		var takenHere []*symbol
		createsThreads := false
		for _, fl := range fields {
			if fl.keep {
				continue
			}
			direct := fl.typ == patch.PC32 && isDirectBranch(code, fl.off)
			if fl.ext {
				if direct && fl.r.sym != nil {
					g.extCalls[fn] = append(g.extCalls[fn], fl.r.sym.base)
					if fl.r.sym.base == "pthread_create" || fl.r.sym.base == "thrd_create" {
						createsThreads = true
					}
				}
				continue
			}
			r, err := m.refOf(fl, fn.display())
			if err != nil {
				g.incomplete = true
				continue
			}
			if r.kind == refIndirect && r.inner != nil {
				r = *r.inner
				direct = false
			}
			if r.kind == refExt && direct {
				g.extCalls[fn] = append(g.extCalls[fn], r.name)
				if r.name == "pthread_create" || r.name == "thrd_create" {
					createsThreads = true
				}
				continue
			}
			if r.kind != refFunc || r.sym == fn {
				continue
			}
			if direct {
				g.calls[fn] = append(g.calls[fn], edge{to: r.sym, off: fl.off})
				g.callers[r.sym]++
				continue
			}
			if r.off == 0 {
				takenHere = append(takenHere, r.sym)
			}
			g.taken[r.sym] = fn.display()
		}
		if createsThreads {
			for _, s := range takenHere {
				g.threadStart[s] = fn.display()
			}
		}
	}
	for _, r := range m.relocs {
		sec := m.sectionAt(r.off)
		if sec == nil || sec.kind == secCode {
			continue
		}
		if r.typ != elf.R_X86_64_64 && r.typ != elf.R_X86_64_32 && r.typ != elf.R_X86_64_32S {
			continue
		}
		t := symValue(r)
		fn := m.funcAt(t)
		if fn == nil || fn.addr != t {
			continue
		}
		switch sec.name {
		case ".init_array", ".preinit_array", ".ctors":
			g.ctors[fn] = sec.name
		default:
			g.taken[fn] = "data in " + sec.name
		}
	}
	for _, fn := range m.funcs {
		if fn.name == "_init" && fn.file == "" {
			g.ctors[fn] = ".init"
		}
	}
	return g, nil
}

// exportedFuncs returns the functions a module defines in its dynamic
// symbol table: other modules can call them at any time.
func exportedFuncs(path string) (map[string]bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, &InputError{Path: path, Reason: "not an ELF file: " + err.Error()}
	}
	defer f.Close()
	out := map[string]bool{}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return out, nil // no .dynsym: a static executable exports nothing
	}
	for _, s := range syms {
		if s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC && elf.ST_BIND(s.Info) != elf.STB_LOCAL {
			out[s.Name] = true
		}
	}
	return out, nil
}

// leavesThread are external functions through which a thread leaves a
// function without returning from it.
var leavesThread = map[string]bool{
	"pthread_exit": true, "thrd_exit": true, "longjmp": true, "_longjmp": true, "siglongjmp": true,
	"__longjmp_chk": true, "setcontext": true, "swapcontext": true,
}

// neverReturns reports whether the original function o (with its .cold
// parts) has no way out: no ret, no jump to another function, no indirect
// jump, no call to a function that leaves the thread (pthread_exit,
// longjmp). Anything else it calls returns to it or ends the process.
func (b *builder) neverReturns(o *symbol, g *callGraph) bool {
	parts := []*symbol{o}
	for _, c := range b.orig.funcs {
		if c.file == o.file && isCold(c.name) && strings.HasPrefix(c.name, o.name+".cold") {
			parts = append(parts, c)
		}
	}
	inParts := func(a uint64) bool {
		for _, p := range parts {
			if a >= p.addr && a < p.addr+p.size {
				return true
			}
		}
		return false
	}
	for _, p := range parts {
		for _, name := range g.extCalls[p] {
			if leavesThread[name] {
				return false
			}
		}
		for _, e := range g.calls[p] {
			code, _ := b.orig.bytesAt(p.addr, p.size)
			if code[e.off-1] == 0xe9 || code[e.off-1]&0xf0 == 0x80 {
				if !inParts(e.to.addr) {
					return false // a tail call
				}
			}
		}
		code, ok := b.orig.bytesAt(p.addr, p.size)
		if !ok {
			return false
		}
		for off := 0; off < len(code); {
			if isEndbr64(code[off:]) {
				off += 4
				continue
			}
			in, err := x86asm.Decode(code[off:], 64)
			if err != nil {
				return false
			}
			switch in.Op {
			case x86asm.RET, x86asm.LRET, x86asm.IRET, x86asm.IRETD, x86asm.IRETQ:
				return false
			case x86asm.JMP:
				if _, rel := in.Args[0].(x86asm.Rel); !rel {
					return false
				}
			}
			off += in.Len
		}
	}
	return true
}

// StartupOnlyError reports a patch whose changed code runs only while the
// process starts: applied to a running process it would change nothing it
// still executes.
type StartupOnlyError struct {
	Function string // a redirected function that runs only at start-up
	Why      string // e.g. "called only from main outside its loops, so once"
}

func (e *StartupOnlyError) Error() string {
	return fmt.Sprintf("refused: %s runs only at start-up (%s); the running process would not execute the fix; restart the service (or build with --allow-startup-only to publish it marked restart-needed)", e.Function, e.Why)
}

// checkEffect returns a *StartupOnlyError when every function the patch
// redirects runs only at process start-up, nil otherwise (also when the
// call graph cannot be read: when unsure, it does not refuse).
//
// Start-up code is what is reached only from constructors (.init_array,
// .preinit_array, .ctors, _init) and from the calls main makes before its
// loop, through direct calls. A function whose address is used other than
// by a direct call (a callback, a thread start routine, a table entry),
// one exported in .dynsym, and one with no caller the builder can see may
// run at any time, and so may everything it calls.
func (b *builder) checkEffect(p *patch.Patch, g *callGraph) *StartupOnlyError {
	if g == nil || g.incomplete {
		return nil
	}
	targets := b.redirected(p)
	if len(targets) == 0 {
		return nil
	}
	main := b.orig.byKey["main"]
	if main != nil && (main.file != "" || b.orig.typ == patch.SharedObject) {
		main = nil
	}
	// Spans of main that may run more than once (its loops); a call outside
	// them runs at most once, at start-up (or at exit).
	var mainLoops [][2]uint64
	mainKnown := false
	if main != nil {
		mainLoops, mainKnown = b.loopSpans(main)
		// A main without a loop of its own (its loop, if any, is in a
		// function it calls, or it is a program that runs once): nothing
		// of it is taken to run once, when unsure the builder does not
		// refuse.
		mainKnown = mainKnown && len(mainLoops) > 0
	}
	onceInMain := func(off uint64) bool { return mainKnown && !inSpans(mainLoops, off) }

	// Functions that may run once the process is up.
	runtime := map[*symbol]bool{}
	var work []*symbol
	mark := func(s *symbol) {
		if !runtime[s] {
			runtime[s] = true
			work = append(work, s)
		}
	}
	for _, fn := range b.orig.funcs {
		if fn == main {
			continue
		}
		_, ctor := g.ctors[fn]
		if g.taken[fn] != "" || (fn.bind != elf.STB_LOCAL && g.exported[fn.base]) || (g.callers[fn] == 0 && !ctor) {
			mark(fn)
		}
	}
	if main != nil {
		for _, e := range g.calls[main] {
			if !onceInMain(e.off) {
				mark(e.to)
			}
		}
	}
	for len(work) > 0 {
		f := work[len(work)-1]
		work = work[:len(work)-1]
		for _, e := range g.calls[f] {
			mark(e.to)
		}
	}

	// Functions reached from start-up code, and why.
	why := map[*symbol]string{}
	work = work[:0]
	reach := func(s *symbol, reason string) {
		if _, ok := why[s]; !ok && !runtime[s] {
			why[s] = reason
			work = append(work, s)
		}
	}
	for fn, sec := range g.ctors {
		reach(fn, "a constructor, run from "+sec)
	}
	if main != nil {
		for _, e := range g.calls[main] {
			if onceInMain(e.off) {
				reach(e.to, "called only from main outside its loops, so once")
			}
		}
	}
	for len(work) > 0 {
		f := work[len(work)-1]
		work = work[:len(work)-1]
		reason := why[f]
		if !strings.HasPrefix(reason, "called only from") {
			reason = "called only from constructors"
		}
		// A function that runs once may still loop, and what it calls
		// in its loops may run for as long as it does (an event loop
		// main calls once): only its calls outside its loops run once.
		loops, known := b.loopSpans(f)
		if !known {
			continue
		}
		for _, e := range g.calls[f] {
			if !inSpans(loops, e.off) {
				reach(e.to, reason)
			}
		}
	}
	for _, t := range targets {
		if _, ok := why[t]; !ok {
			return nil
		}
	}
	return &StartupOnlyError{Function: targets[0].display(), Why: why[targets[0]]}
}

// loopSpans returns the spans [from, to] of fn's code that may run more
// than once in one call: from the target of each backward jump to the jump,
// and, for each indirect jump (a switch, a computed goto), from each place
// it may go to below it (its jump table's entries, the labels whose
// address the code takes) to the jump. Code outside every span runs at
// most once per call. known is false when that cannot be told: an indirect
// jump with no known targets, or code that does not decode.
func (b *builder) loopSpans(fn *symbol) (spans [][2]uint64, known bool) {
	code, ok := b.orig.bytesAt(fn.addr, fn.size)
	if !ok {
		return nil, false
	}
	var indirect []uint64
	var targets []uint64
	tablesRead := false
	for off := 0; off < len(code); {
		if isEndbr64(code[off:]) {
			off += 4
			continue
		}
		in, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			return nil, false
		}
		if isJump(in.Op) {
			if rel, ok := in.Args[0].(x86asm.Rel); !ok {
				indirect = append(indirect, uint64(off))
				if !tablesRead {
					targets, tablesRead = append(targets, b.jumpTargets(fn)...), true
				}
			} else if t := int64(off+in.Len) + int64(rel); t >= 0 && t <= int64(off) {
				spans = append(spans, [2]uint64{uint64(t), uint64(off)})
			}
		}
		// lea of a place inside the function itself (a computed goto's label).
		if in.Op == x86asm.LEA && in.PCRel == 4 {
			if m, ok := in.Args[1].(x86asm.Mem); ok && m.Base == x86asm.RIP {
				if t := int64(off+in.Len) + m.Disp; t > 0 && t < int64(len(code)) {
					targets = append(targets, uint64(t))
				}
			}
		}
		off += in.Len
	}
	if len(indirect) > 0 && len(targets) == 0 {
		return nil, false
	}
	for _, j := range indirect {
		for _, t := range targets {
			if t <= j {
				spans = append(spans, [2]uint64{t, j})
			}
		}
	}
	return spans, true
}

// inSpans reports whether off lies in one of spans.
func inSpans(spans [][2]uint64, off uint64) bool {
	for _, s := range spans {
		if off >= s[0] && off <= s[1] {
			return true
		}
	}
	return false
}

func isJump(op x86asm.Op) bool {
	switch op {
	case x86asm.JMP, x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JCXZ, x86asm.JE, x86asm.JECXZ,
		x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS,
		x86asm.JO, x86asm.JP, x86asm.JRCXZ, x86asm.JS, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE:
		return true
	}
	return false
}

// jumpTargets returns the offsets inside fn that data refers to: the
// entries of its jump tables (absolute, or relative to the table's start as
// gcc writes them for PIC) and the labels of computed gotos.
func (b *builder) jumpTargets(fn *symbol) []uint64 {
	m := b.orig
	var out []uint64
	for _, r := range m.relocs {
		sec := m.sectionAt(r.off)
		if sec == nil || sec.kind == secCode {
			continue
		}
		var t uint64
		switch r.typ {
		case elf.R_X86_64_64, elf.R_X86_64_32, elf.R_X86_64_32S:
			t = symValue(r)
		case elf.R_X86_64_PC32:
			// ".long .Lcase - .Ltable": the table starts at the label at or
			// before the entry.
			i := sort.Search(len(m.labels), func(i int) bool { return m.labels[i] > r.off }) - 1
			if i < 0 {
				continue
			}
			t = symValue(r) - (r.off - m.labels[i])
		default:
			continue
		}
		if t > fn.addr && t < fn.addr+fn.size {
			out = append(out, t-fn.addr)
		}
	}
	return out
}
