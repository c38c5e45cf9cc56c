package builder

import (
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/unwind"
)

// Options carries the descriptive fields of the patch.
type Options struct {
	ID          string // default: "<target name>-<first 8 hex of fixed build-id>"
	Version     uint32 // default 1
	CVEs        []string
	Severity    patch.Severity
	Description string

	// IncludeLineChanges carries functions whose only difference is a line
	// number (__LINE__) or a build stamp (__DATE__, __TIME__), which are
	// left out by default (see lines.go).
	IncludeLineChanges bool
	// Report, if set, receives what the build left out and why.
	Report *Report
	// AllowStartupOnly builds a patch whose changed code runs only at
	// process start-up, marked patch.FlagStartupOnly, instead of refusing it.
	AllowStartupOnly bool
	// AllowNewExports builds a patch although the fixed build exports new
	// symbols, carrying the new functions hidden (patch.FuncExported).
	AllowNewExports bool
	// AllowNeverApplies builds a patch that the engine will certainly
	// refuse (it replaces main, a thread's endless top function or an entry
	// too short for the redirect). Only for tests of the engine's own
	// refusals; the CLI has no flag for it.
	AllowNeverApplies bool
}

// Build diffs the original and the fixed build of one module and returns the
// unsigned patch that turns a process running orig into one running fixed.
func Build(orig, fixed string, opts Options) (*patch.Patch, error) {
	o, err := openModule(orig)
	if err != nil {
		return nil, err
	}
	f, err := openModule(fixed)
	if err != nil {
		return nil, err
	}
	if o.typ != f.typ {
		return nil, &InputError{Path: fixed, Reason: fmt.Sprintf("is a %v but the original is a %v; build both the same way", f.typ, o.typ)}
	}
	b := &builder{orig: o, fixed: f, opts: opts, corr: map[*symbol]*symbol{}, fields: map[*symbol][]field{}, loose: map[*symbol]error{}}
	if err := b.pair(); err != nil {
		return nil, err
	}
	if err := b.checkData(); err != nil {
		return nil, err
	}
	if err := b.diff(); err != nil {
		return nil, err
	}
	if err := b.checkSameWay(); err != nil {
		return nil, err
	}
	if opts.Report != nil {
		opts.Report.LeftOut = b.leftOut
	}
	if len(b.changed) == 0 && len(b.added) == 0 {
		return nil, b.noChange()
	}
	p, err := b.emit()
	if err != nil {
		return nil, err
	}
	if err := b.review(p, opts); err != nil { // review.go
		return nil, err
	}
	p.ID = opts.ID
	if p.ID == "" {
		p.ID = fmt.Sprintf("%s-%x", sanitizeID(p.Target.Name), f.buildID[:min(4, len(f.buildID))])
	}
	p.Version = opts.Version
	if p.Version == 0 {
		p.Version = 1
	}
	p.CVEs = opts.CVEs
	p.Severity = opts.Severity
	p.Description = opts.Description
	return p, nil
}

func sanitizeID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r) {
			return r
		}
		return '_'
	}, s)
}

type builder struct {
	orig, fixed *module
	opts        Options
	leftOut     []LeftOut               // functions that differ only in line numbers or stamps
	lineTabs    map[*module]*lineTables // DWARF line tables, read on first use (linetable.go)
	sources     sourceLines             // source files read to check a number taken for a line
	corr        map[*symbol]*symbol     // fixed function or object -> original
	fields      map[*symbol][]field     // code fields per function, either module
	loose       map[*symbol]error       // functions with references that lack relocations

	changed map[*symbol]bool // fixed functions whose code changed
	added   map[*symbol]bool // fixed functions absent from the original

	out     *patch.Patch
	textOff map[*symbol]uint64  // fixed function -> offset in Text
	roOff   map[uint64]uint64   // fixed chunk start -> offset in ROData
	dataOff map[*symbol]uint64  // fixed new object -> offset in Data or BSS
	anonOff map[uint64]anonCopy // fixed unnamed writable chunk -> its copy in Data or BSS

	// Comparison of data chunks (see sameChunk).
	chunkMemo map[chunkPair]bool
	chunkBusy map[chunkPair]bool
	chunkTrue []chunkPair

	// Unnamed writable chunks: fixed start -> original start, learnt from
	// the references of paired functions; 0 when two candidates conflict.
	anonPair  map[uint64]uint64
	anonBound map[uint64][2]uint64 // fixed chunk start -> original start and size it was bound to
}

type anonCopy struct {
	sec patch.Section
	off uint64
}

var cloneNumber = regexp.MustCompile(`\.(constprop|isra|part|cold|lto_priv|localalias)\.[0-9]+|\.[0-9]+$`)

// normalKey drops gcc's clone and static-variable numbers, which can shift
// between two builds of the same source.
func normalKey(key string) string { return cloneNumber.ReplaceAllString(key, ".$1.N") }

// pair matches the functions and objects of the fixed build with those of
// the original: by identity first, then by name without clone numbers when
// that is unambiguous on both sides, then statics by name alone, whatever
// their source file is called (a fix that renamed counter.c to
// counter-fixed.c keeps the live static counter), again only when that is
// unambiguous. A writable static that could be one of several is refused:
// a fresh copy would silently restart its state.
func (b *builder) pair() error {
	pairList := func(fixed, orig []*symbol) error {
		used := map[*symbol]bool{}
		var rest []*symbol
		for _, s := range fixed {
			if o := b.orig.byKey[s.key]; o != nil && b.fixed.byKey[s.key] == s && kindOf(o) == kindOf(s) {
				b.corr[s] = o
				used[o] = true
			} else {
				rest = append(rest, s)
			}
		}
		byNorm := map[string][]*symbol{}
		for _, o := range orig {
			if !used[o] {
				byNorm[normalKey(o.key)] = append(byNorm[normalKey(o.key)], o)
			}
		}
		restNorm := map[string]int{}
		for _, s := range rest {
			restNorm[normalKey(s.key)]++
		}
		var rest2 []*symbol
		for _, s := range rest {
			k := normalKey(s.key)
			if c := byNorm[k]; len(c) == 1 && restNorm[k] == 1 && kindOf(c[0]) == kindOf(s) {
				b.corr[s] = c[0]
				used[c[0]] = true
			} else {
				rest2 = append(rest2, s)
			}
		}
		// Statics of a renamed source file: by name alone.
		byName := map[string][]*symbol{}
		for _, o := range orig {
			if !used[o] && o.file != "" {
				byName[normalKey(o.name)] = append(byName[normalKey(o.name)], o)
			}
		}
		restName := map[string]int{}
		for _, s := range rest2 {
			if s.file != "" {
				restName[normalKey(s.name)]++
			}
		}
		for _, s := range rest2 {
			if s.file == "" {
				continue
			}
			k := normalKey(s.name)
			c := byName[k]
			switch {
			case len(c) == 1 && restName[k] == 1 && kindOf(c[0]) == kindOf(s) && c[0].typ == s.typ:
				b.corr[s] = c[0]
				used[c[0]] = true
			case len(c) > 0 && (kindOf(s) == secData || kindOf(s) == secBSS):
				var where []string
				for _, o := range c {
					where = append(where, o.display())
				}
				sort.Strings(where)
				return &UnsupportedError{Function: s.display(), Reason: fmt.Sprintf(
					"a static with no counterpart in its source file, and the original has %d of that name (%s): which one it continues cannot be told; rename the source file back or give the static a unique name",
					len(c), strings.Join(where, ", "))}
			}
		}
		return nil
	}
	if err := pairList(b.fixed.funcs, b.orig.funcs); err != nil {
		return err
	}
	return pairList(b.fixed.objects, b.orig.objects)
}

func kindOf(s *symbol) secKind {
	if s.sec == nil {
		return secOther
	}
	return s.sec.kind
}

func (b *builder) codeFields(m *module, fn *symbol) ([]field, error) {
	if f, ok := b.fields[fn]; ok {
		return f, nil
	}
	f, loose, err := m.codeFields(fn)
	if err != nil {
		return nil, err
	}
	b.fields[fn] = f
	if loose != nil {
		b.loose[fn] = loose
	}
	return f, nil
}

// diff finds the changed and the new functions of the fixed build.
// checkSameWay refuses a pair that was not built the same way, before any
// refusal that would name a function the fix never touched: the C runtime's
// code (crtstuff.c, linked unchanged into every program) changed, or at
// least 8 functions and more than half of all changed.
func (b *builder) checkSameWay() error {
	paired, changed := 0, 0
	for _, f := range b.fixed.funcs {
		if b.corr[f] == nil || f.sec == nil || f.sec.name != ".text" && !strings.HasPrefix(f.sec.name, ".text.") {
			continue
		}
		paired++
		if !b.changed[f] {
			continue
		}
		changed++
		if f.file == "crtstuff.c" {
			return &BuildsDifferError{Function: f.display()}
		}
	}
	if changed >= 8 && changed*2 > paired {
		return &BuildsDifferError{Changed: changed, Total: paired}
	}
	return nil
}

func (b *builder) diff() error {
	b.changed = map[*symbol]bool{}
	b.added = map[*symbol]bool{}
	// callers of a function at a non-zero offset: they must move with it.
	midRefs := map[*symbol][]*symbol{}
	for _, f := range b.fixed.funcs {
		if f.sec.name != ".text" && !strings.HasPrefix(f.sec.name, ".text.") {
			continue // .init, .fini: run once at start and exit
		}
		o := b.corr[f]
		if o == nil {
			b.added[f] = true
			continue
		}
		same, err := b.sameFunc(o, f)
		if err != nil {
			return err
		}
		if !same {
			if ok, why := b.lineOnly(o, f); ok && !b.opts.IncludeLineChanges {
				b.leftOut = append(b.leftOut, LeftOut{Function: f.display(), Reason: "only line numbers or build stamps changed (" + why + ")"})
			} else {
				b.changed[f] = true
				continue
			}
		}
		ff, _ := b.codeFields(b.fixed, f)
		for _, fl := range ff {
			// A cold part is entered only from its parent, at any offset:
			// the parent must move with it, or the new part is never run.
			if r, err := b.fixed.refOf(fl, f.display()); err == nil && r.kind == refFunc && (r.off != 0 || isCold(r.sym.name)) && r.sym != f {
				midRefs[r.sym] = append(midRefs[r.sym], f)
			}
		}
	}
	// A function that jumps into the middle of a changed one (a .cold part
	// going back to its parent) would land in old code: it changes too. So
	// does the parent of a changed .cold part, which is not redirected.
	work := make([]*symbol, 0, len(b.changed))
	for f := range b.changed {
		work = append(work, f)
	}
	for len(work) > 0 {
		f := work[len(work)-1]
		work = work[:len(work)-1]
		for _, g := range midRefs[f] {
			if !b.changed[g] {
				b.changed[g] = true
				work = append(work, g)
			}
		}
	}
	return nil
}

func (b *builder) sameFunc(o, f *symbol) (bool, error) {
	if o.size != f.size {
		debugf("%s: size %d -> %d", f.display(), o.size, f.size)
		return false, nil
	}
	fo, err := b.codeFields(b.orig, o)
	if err != nil {
		return false, err
	}
	ff, err := b.codeFields(b.fixed, f)
	if err != nil {
		return false, err
	}
	bo, _ := b.orig.bytesAt(o.addr, o.size)
	bf, _ := b.fixed.bytesAt(f.addr, f.size)
	return b.sameFields(bo, bf, fo, ff, f.display())
}

// checkData refuses changes to existing data: its initial value, size or
// section, and the thread-local layout.
func (b *builder) checkData() error {
	for _, f := range b.fixed.objects {
		o := b.corr[f]
		if o == nil || (f.sec.kind != secData && f.sec.kind != secBSS) {
			continue
		}
		if d := b.fixed.dyn[f.addr]; d != nil && d.typ == elf.R_X86_64_COPY {
			continue // a copy of a library object: not ours
		}
		if o.sec.kind != f.sec.kind {
			return &DataChangeError{Object: f.display(), Reason: fmt.Sprintf("moved from %s to %s, so its initial value changed", o.sec.name, f.sec.name)}
		}
		if o.size != f.size {
			return &DataChangeError{Object: f.display(), Reason: fmt.Sprintf("size changed from %d to %d bytes", o.size, f.size)}
		}
		if f.sec.kind != secData {
			continue
		}
		bo, _ := b.orig.bytesAt(o.addr, o.size)
		bf, _ := b.fixed.bytesAt(f.addr, f.size)
		fo, err := b.orig.dataFields(o.addr, o.addr+o.size, o.display())
		if err != nil {
			return err
		}
		ff, err := b.fixed.dataFields(f.addr, f.addr+f.size, f.display())
		if err != nil {
			return err
		}
		same, err := b.sameFields(bo, bf, fo, ff, f.display())
		if err != nil {
			return err
		}
		if !same {
			if why, ok := b.stampsOnly(bo, bf, fo, ff); ok {
				// The process keeps the original's value, as for any
				// existing object: only a build stamp or a line number
				// differs (whatever IncludeLineChanges says: data cannot
				// be carried).
				b.leftOut = append(b.leftOut, LeftOut{Function: f.display(), Reason: "initial value differs only in " + why + "; the running value is kept", Data: true})
				continue
			}
			return &DataChangeError{Object: f.display(), Reason: "initial value changed"}
		}
	}
	return b.checkTLS()
}

func (b *builder) checkTLS() error {
	to, tf := b.orig.tls, b.fixed.tls
	if to == nil && tf == nil {
		return nil
	}
	if to == nil || tf == nil || to.Memsz != tf.Memsz || to.Filesz != tf.Filesz || to.Align != tf.Align {
		return &DataChangeError{Object: "thread-local storage", Reason: "its layout changed (a thread-local variable was added, removed or resized)"}
	}
	for _, f := range b.fixed.objects {
		if f.typ != elf.STT_TLS {
			continue
		}
		o := b.corr[f]
		if o == nil {
			return &DataChangeError{Object: f.display(), Reason: "is a new thread-local variable; threads that already run have no room for it"}
		}
		if o.addr != f.addr || o.size != f.size {
			return &DataChangeError{Object: f.display(), Reason: "thread-local layout changed"}
		}
	}
	// The initial image compares like other data, modulo relocations: a
	// pointer to a string literal that moved with .rodata is unchanged.
	ro, _ := b.orig.bytesAt(to.Vaddr, to.Filesz)
	rf, _ := b.fixed.bytesAt(tf.Vaddr, tf.Filesz)
	fo, err := b.orig.dataFields(to.Vaddr, to.Vaddr+to.Filesz, "thread-local storage")
	if err != nil {
		return err
	}
	ff, err := b.fixed.dataFields(tf.Vaddr, tf.Vaddr+tf.Filesz, "thread-local storage")
	if err != nil {
		return err
	}
	same, err := b.sameFields(ro, rf, fo, ff, "thread-local storage")
	if err != nil {
		return err
	}
	if !same {
		return &DataChangeError{Object: "thread-local storage", Reason: "initial value of a thread-local variable changed"}
	}
	return nil
}

// included reports whether the fixed function's code is in the patch.
func (b *builder) included(f *symbol) bool { return b.changed[f] || b.added[f] }

func isCold(name string) bool {
	return strings.HasSuffix(name, ".cold") || strings.Contains(name, ".cold.")
}

// emit lays out the patch: code of the included functions, then the data
// they need, then the relocations.
func (b *builder) emit() (*patch.Patch, error) {
	p := &patch.Patch{
		Target: patch.Target{
			Name:    filepath.Base(b.orig.path),
			BuildID: b.orig.buildID,
			Arch:    patch.ArchX86_64,
			Type:    b.orig.typ,
		},
	}
	b.out = p
	b.textOff = map[*symbol]uint64{}
	b.roOff = map[uint64]uint64{}
	b.dataOff = map[*symbol]uint64{}

	var replaced, added []*symbol
	for f := range b.changed {
		replaced = append(replaced, f)
	}
	for f := range b.added {
		added = append(added, f)
	}
	sort.Slice(replaced, func(i, j int) bool { return b.corr[replaced[i]].addr < b.corr[replaced[j]].addr })
	sort.Slice(added, func(i, j int) bool { return added[i].key < added[j].key })
	if err := b.checkEH(append(append([]*symbol{}, replaced...), added...)); err != nil {
		return nil, err
	}

	oldIncluded := map[*symbol]bool{}
	for _, f := range append(replaced, added...) {
		off := alignUp(uint64(len(p.Text)), 16)
		p.Text = append(p.Text, make([]byte, off-uint64(len(p.Text)))...)
		code, _ := b.fixed.bytesAt(f.addr, f.size)
		p.Text = append(p.Text, code...)
		b.textOff[f] = off
		fn := patch.Function{Name: f.name, File: f.file, NewOffset: off, NewSize: f.size}
		if o := b.corr[f]; o != nil {
			b.setOld(&fn, o)
			oldIncluded[o] = true
			if isCold(o.name) {
				fn.Flags |= patch.FuncNoRedirect
			}
		} else {
			fn.Flags = patch.FuncNew
		}
		p.Functions = append(p.Functions, fn)
	}
	p.Unwind = b.unwindFor(append(replaced, added...))
	// Cold parts of replaced functions that the fix dropped still count for
	// the consistency check: a thread may be inside them.
	for _, f := range replaced {
		o := b.corr[f]
		for _, c := range b.orig.funcs {
			if !oldIncluded[c] && c.file == o.file && isCold(c.name) && strings.HasPrefix(c.name, o.name+".cold") {
				fn := patch.Function{Name: c.name, File: c.file, Flags: patch.FuncNoRedirect}
				b.setOld(&fn, c)
				oldIncluded[c] = true
				p.Functions = append(p.Functions, fn)
			}
		}
	}
	for _, f := range append(replaced, added...) {
		fields, err := b.codeFields(b.fixed, f)
		if err != nil {
			return nil, err
		}
		if err := b.loose[f]; err != nil {
			return nil, err
		}
		for _, fl := range fields {
			if fl.keep {
				continue
			}
			r, err := b.fixed.refOf(fl, f.display())
			if err != nil {
				return nil, err
			}
			t, err := b.target(r, f.display())
			if err != nil {
				return nil, err
			}
			p.Relocs = append(p.Relocs, patch.Reloc{Section: patch.Text, Offset: b.textOff[f] + fl.off, Type: fl.typ, Target: t, Addend: relocAddend(fl, r)})
		}
	}
	return p, nil
}

// relocAddend is A of the patch relocation: T+A(-P) gives the field value.
func relocAddend(f field, r ref) int64 {
	if r.kind == refExt {
		// The field referred to the PLT, a GOT slot or a copy of the
		// object; the patch refers to the symbol itself, plus the offset.
		if f.typ == patch.PC32 {
			return f.addend + r.off
		}
		return r.off
	}
	return f.addend
}

func (b *builder) setOld(fn *patch.Function, o *symbol) {
	code, _ := b.orig.bytesAt(o.addr, o.size)
	fn.OldAddr, fn.OldSize, fn.OldSHA256 = o.addr, o.size, sha256.Sum256(code)
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// target turns the meaning of a field of the fixed build into a patch
// relocation target, carrying data into the patch where needed.
func (b *builder) target(r ref, from string) (patch.RelocTarget, error) {
	switch r.kind {
	case refFunc:
		if b.included(r.sym) {
			return patch.RelocTarget{Kind: patch.InPatch, Section: patch.Text, Offset: b.textOff[r.sym] + uint64(r.off)}, nil
		}
		o := b.corr[r.sym]
		if o == nil {
			return patch.RelocTarget{}, &UnsupportedError{Function: from, Reason: "reference to function " + r.sym.display() + " that has no counterpart in the original"}
		}
		return patch.RelocTarget{Kind: patch.InModule, Addr: o.addr + uint64(r.off)}, nil
	case refObj:
		if o := b.corr[r.sym]; o != nil {
			return patch.RelocTarget{Kind: patch.InModule, Addr: o.addr + uint64(r.off)}, nil
		}
		return b.carryObject(r.sym, r.off, from)
	case refExt:
		// Where the original already holds a copy of the library object
		// (copy relocation), that copy is the live one: use it.
		if o := b.orig.copyOf(r.name, r.ver); o != nil && !r.indirect {
			return patch.RelocTarget{Kind: patch.InModule, Addr: o.addr}, nil // r.off is in the addend
		}
		return patch.RelocTarget{Kind: patch.External, Symbol: r.name, Version: r.ver, Indirect: r.indirect}, nil
	case refGOT:
		return b.gotTarget(r.dyn, from)
	case refLabel:
		for _, s := range b.orig.syms[1:] {
			if s != nil && s.key == r.sym.key && s.defined() {
				return patch.RelocTarget{Kind: patch.InModule, Addr: s.addr + uint64(r.off)}, nil
			}
		}
		return patch.RelocTarget{}, &UnsupportedError{Function: from, Reason: "reference to symbol " + r.sym.display() + " that the original lacks"}
	case refAnon:
		return b.anonTarget(r, from)
	case refIndirect:
		t, err := b.target(*r.inner, from)
		t.Indirect = true
		return t, err
	case refRO:
		if r.sym != nil {
			if o := b.corr[r.sym]; o != nil {
				ro := ref{kind: refRO, sym: o, start: o.addr, end: o.addr + o.size, off: r.off}
				if same, err := b.sameROData(ro, r); err != nil {
					return patch.RelocTarget{}, err
				} else if same {
					return patch.RelocTarget{Kind: patch.InModule, Addr: o.addr + uint64(r.off)}, nil
				}
			}
		}
		off, err := b.carryRO(r, from)
		if err != nil {
			return patch.RelocTarget{}, err
		}
		return patch.RelocTarget{Kind: patch.InPatch, Section: patch.ROData, Offset: off + uint64(r.off)}, nil
	}
	return patch.RelocTarget{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf("reference of kind %d", r.kind)}
}

// gotTarget binds a GOT slot of the fixed build to the original's slot for
// the same thing, or asks the apply side for a slot of its own.
func (b *builder) gotTarget(d *dynReloc, from string) (patch.RelocTarget, error) {
	for _, od := range b.orig.dynSorted() {
		if od.typ != d.typ {
			continue
		}
		if s := b.orig.sectionAt(od.off); s == nil || s.kind != secGOT {
			continue
		}
		var match bool
		if d.typ == elf.R_X86_64_RELATIVE {
			match = b.sameRelative(od, d)
		} else {
			match = od.sym == d.sym && od.addend == d.addend
		}
		if match {
			return patch.RelocTarget{Kind: patch.InModule, Addr: od.off}, nil
		}
	}
	switch d.typ {
	case elf.R_X86_64_GLOB_DAT, elf.R_X86_64_JMP_SLOT, elf.R_X86_64_64:
		if d.sym == "" {
			break
		}
		if d.addend != 0 {
			break
		}
		return patch.RelocTarget{Kind: patch.External, Symbol: d.sym, Indirect: true}, nil
	case elf.R_X86_64_RELATIVE:
		inner, err := b.fixed.refAt(uint64(d.addend), nil, from)
		if err != nil {
			return patch.RelocTarget{}, err
		}
		t, err := b.target(inner, from)
		t.Indirect = true
		return t, err
	}
	return patch.RelocTarget{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf("new reference through a GOT slot of type %v (%s); thread-local variables the original never used cannot be reached yet", d.typ, d.sym)}
}

func (b *builder) sameRelative(od, d *dynReloc) bool {
	if od.typ != elf.R_X86_64_RELATIVE || d.typ != elf.R_X86_64_RELATIVE {
		return false
	}
	ro, err := b.orig.refAt(uint64(od.addend), nil, "GOT")
	if err != nil {
		return false
	}
	rf, err := b.fixed.refAt(uint64(d.addend), nil, "GOT")
	if err != nil {
		return false
	}
	ok, _ := b.equivalent(ro, rf)
	return ok
}

// carryRO copies a read-only chunk of the fixed build into ROData, with its
// relocations, once.
func (b *builder) carryRO(r ref, from string) (uint64, error) {
	if off, ok := b.roOff[r.start]; ok {
		return off, nil
	}
	p := b.out
	data, ok := b.fixed.bytesAt(r.start, r.end-r.start)
	if !ok {
		return 0, &UnsupportedError{Function: from, Reason: fmt.Sprintf("read-only data at %#x cannot be read", r.start)}
	}
	off := alignUp(uint64(len(p.ROData)), 16)
	p.ROData = append(p.ROData, make([]byte, off-uint64(len(p.ROData)))...)
	p.ROData = append(p.ROData, data...)
	b.roOff[r.start] = off
	name := fmt.Sprintf("rodata@%#x", r.start)
	if r.sym != nil {
		name = r.sym.display()
	} else if l := b.fixed.labelAt(r.start); l != "" {
		name = l
	}
	p.Objects = append(p.Objects, patch.Object{Name: name, Section: patch.ROData, Offset: off, Size: uint64(len(data))})
	return off, b.carryFields(patch.ROData, off, r.start, r.end, from)
}

// carryObject copies a new writable object into Data or BSS.
func (b *builder) carryObject(s *symbol, at int64, from string) (patch.RelocTarget, error) {
	p := b.out
	sec := patch.Data
	if s.sec.kind == secBSS {
		sec = patch.BSS
	}
	off, ok := b.dataOff[s]
	if !ok {
		if sec == patch.BSS {
			off = alignUp(p.BSSSize, 16)
			p.BSSSize = off + s.size
		} else {
			data, _ := b.fixed.bytesAt(s.addr, s.size)
			off = alignUp(uint64(len(p.Data)), 16)
			p.Data = append(p.Data, make([]byte, off-uint64(len(p.Data)))...)
			p.Data = append(p.Data, data...)
		}
		b.dataOff[s] = off
		p.Objects = append(p.Objects, patch.Object{Name: s.display(), Section: sec, Offset: off, Size: s.size})
		if sec == patch.Data {
			if err := b.carryFields(patch.Data, off, s.addr, s.addr+s.size, from); err != nil {
				return patch.RelocTarget{}, err
			}
		}
	}
	return patch.RelocTarget{Kind: patch.InPatch, Section: sec, Offset: off + uint64(at)}, nil
}

func (b *builder) carryFields(sec patch.Section, off, start, end uint64, from string) error {
	fields, err := b.fixed.dataFields(start, end, from)
	if err != nil {
		return err
	}
	for _, fl := range fields {
		if fl.keep {
			continue
		}
		r, err := b.fixed.refOf(fl, from)
		if err != nil {
			return err
		}
		t, err := b.target(r, from)
		if err != nil {
			return err
		}
		b.out.Relocs = append(b.out.Relocs, patch.Reloc{Section: sec, Offset: off + fl.off, Type: fl.typ, Target: t, Addend: relocAddend(fl, r)})
	}
	return nil
}

// labelAt returns the name of a symbol at addr (".LC3"), if any.
func (m *module) labelAt(addr uint64) string {
	for _, s := range m.syms[1:] {
		if s != nil && s.addr == addr && s.defined() && s.name != "" && s.typ != elf.STT_SECTION && s.sec != nil && s.sec.kind == secROData {
			return s.name
		}
	}
	return ""
}

// unwindFor carries the fixed build's call frame information for the
// functions copied into the patch text, so the engine can unwind threads
// running patch code exactly. A fixed build without usable CFI gives none:
// the engine then scans such threads' stacks conservatively.
func (b *builder) unwindFor(funcs []*symbol) []byte {
	ef, err := elf.Open(b.fixed.path)
	if err != nil {
		return nil
	}
	defer ef.Close()
	tab, err := unwind.Load(ef)
	if err != nil {
		debugf("no unwind information carried: %v", err)
		return nil
	}
	moves := make([]unwind.Move, len(funcs))
	for i, f := range funcs {
		moves[i] = unwind.Move{From: f.addr, Size: f.size, To: b.textOff[f]}
	}
	data, covered, err := tab.Extract(moves)
	if err != nil {
		debugf("no unwind information carried: %v", err)
		return nil
	}
	for i, ok := range covered {
		if !ok {
			debugf("%s: no FDE in the fixed build; threads in it will be scanned", funcs[i].name)
		}
	}
	return data
}
