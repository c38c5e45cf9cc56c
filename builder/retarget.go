package builder

import (
	"bytes"
	"crypto/sha256"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/unwind"
)

// Retargeting carries a patch built from a rebuild over to an installed
// binary of the same source whose loaded bytes are not the rebuild's: a
// distribution's package that its source no longer rebuilds byte-for-byte
// (a configure check that finds another library today, a table one entry
// longer, an older compiler). Segment-level identity is then lost, so the
// proof is made per function instead:
//
//   - every function of each compile unit the patch replaces code in is
//     found in the installed binary and proven the same code: equal bytes
//     everywhere except the relocated fields (addresses), which must each
//     point at one consistent place. Same code in the whole unit means the
//     same inlining decisions, so the rebuild's diff found every copy of
//     the fixed code (link-time optimisation, which inlines across units,
//     is refused);
//   - every address the new code refers to in the module is translated to
//     the installed binary by evidence, never by guess: the installed
//     symbol of the same name and size (from its debug file), or what the
//     proven code of the installed binary itself refers to at the same
//     field, or the dynamic relocation of a GOT slot.
//
// Functions are found by the installed binary's symbols when a debug file
// is given (Debian's -dbgsym package), else by the exported symbols, the
// call targets of proven code, the shift of the neighbouring proven
// function, and last a search of the installed code for the one place
// where the function's bytes match. Anything not proven is refused with
// the function or reference that failed.

// RetargetOptions say how to read the installed binary.
type RetargetOptions struct {
	// Symbols is a file holding the installed binary's full symbol table:
	// its separate debug file (Debian's -dbgsym package installs it as
	// /usr/lib/debug/.build-id/xx/yyyy.debug) or an unstripped copy. Its
	// build-id must be the installed binary's. "" finds code by matching.
	Symbols string
	// CodeAlone accepts, when no DWARF of the installed binary is at hand,
	// the proof that every function of the module is the rebuild's code:
	// the layouts of types are then known only through the code that uses
	// them, so a member that no code of the program touches (and that the
	// fix starts to use) is not seen. Without it, such a retarget is
	// refused with a *SymbolsNeededError.
	CodeAlone bool
}

// SymbolsNeededError reports a retarget that needs the installed binary's
// debug information (its DWARF), which was not given.
type SymbolsNeededError struct{ Installed string }

func (e *SymbolsNeededError) Error() string {
	return fmt.Sprintf("the layouts of the types the fix uses can be compared with the installed %s only through its debug information: install its -dbgsym package (or name its debug file), or accept a proof by code alone (every function of the module the rebuild's code; a type member that no code of the program touches is not seen)", e.Installed)
}

// RetargetProof says what Retarget proved.
type RetargetProof struct {
	// Symbols is the file the installed binary's symbols came from, "" if
	// none was used.
	Symbols string
	// Units are the compile units the patch replaces code in; each of their
	// functions (Functions in all) is proven the same code.
	Units     []string
	Functions int
	// Proven is how many functions of the whole module were proven (each
	// adds evidence about where things lie in the installed binary).
	Proven, Total int
	// Moved counts the patch's references into the module whose address
	// differs in the installed binary; Same those that do not.
	Moved, Same int
	// LayoutsChecked says the types the patch's code uses were compared
	// with the installed binary's DWARF and found the same; AllCode that,
	// without it, every function of the module was proven the same code.
	LayoutsChecked, AllCode bool
}

// NotSameCodeError reports an installed binary that was not compiled from
// the rebuild's code where the patch needs it.
type NotSameCodeError struct {
	Installed string
	Unit      string // compile unit, "" if not about one
	What      string // a function or a reference
	Reason    string
}

func (e *NotSameCodeError) Error() string {
	unit := ""
	if e.Unit != "" {
		unit = " (compile unit " + e.Unit + ")"
	}
	return fmt.Sprintf("the installed %s is not proven to hold the rebuild's code where the patch needs it: %s%s %s", e.Installed, e.What, unit, e.Reason)
}

type retarget struct {
	r, in   *module
	symbols bool // in has its full symbol table

	delta map[*symbol]int64  // proven functions: installed address minus rebuilt
	why   map[*symbol]string // why a function is not proven
	ev    map[uint64]int64   // rebuilt address that proven code refers to: installed minus rebuilt
	bad   map[uint64]bool    // addresses with conflicting evidence
	evs   []uint64           // keys of ev, sorted

	fields map[*symbol][]field

	rframes, iframes *unwind.Table // call frame information of both
	idi              *debugInfo    // the installed binary's DWARF, if its debug file has it
}

// fieldsOf returns the relocated fields of a rebuilt function, once.
func (t *retarget) fieldsOf(fn *symbol) ([]field, error) {
	if f, ok := t.fields[fn]; ok {
		return f, nil
	}
	f, _, err := t.r.codeFields(fn)
	if err != nil {
		return nil, err
	}
	t.fields[fn] = f
	return f, nil
}

// Retarget returns p, built from rebuilt and fixed, made for installed:
// every replaced function and every reference into the module moved to
// where the installed binary has them, with the installed bytes' hashes
// and build-id.
//
// Proven code does not prove the layout of every type: a member that the
// unit's old code never touched may sit elsewhere in the installed build
// (a configure option adds a member before it). With the installed
// binary's DWARF (its debug file), the layout of every type the patch's
// code uses is compared with it; without, every function of the whole
// module must be proven the same code, so that only data differs.
func Retarget(p *patch.Patch, rebuilt, fixed, installed string, opts RetargetOptions) (*patch.Patch, *RetargetProof, error) {
	t, di, err := newRetarget(rebuilt, installed, opts)
	if err != nil {
		return nil, nil, err
	}
	r, in := t.r, t.in
	if !bytes.Equal(r.buildID, p.Target.BuildID) {
		return nil, nil, &InputError{Path: rebuilt, Reason: fmt.Sprintf("the patch was built for build-id %x, not this file's %x", p.Target.BuildID, r.buildID)}
	}
	proof := &RetargetProof{Symbols: opts.Symbols, Proven: len(t.delta), Total: len(r.funcs)}
	unitOf := di.unitOf
	units := map[string]bool{}
	for _, f := range p.Functions {
		if !f.Replaces() {
			continue
		}
		fn := r.funcAt(f.OldAddr)
		if fn == nil || fn.addr != f.OldAddr {
			return nil, nil, &InputError{Path: rebuilt, Reason: fmt.Sprintf("holds no function at %#x where the patch replaces %s", f.OldAddr, f.Name)}
		}
		u := unitOf(fn)
		if u == "" {
			return nil, nil, &NotSameCodeError{Installed: installed, What: fn.display(), Reason: "has no compile unit in the rebuild's DWARF"}
		}
		units[u] = true
	}
	for _, fn := range r.funcs {
		u := unitOf(fn)
		if !units[u] {
			continue
		}
		if _, ok := t.delta[fn]; !ok {
			t.proveSearch(fn)
		}
		if _, ok := t.delta[fn]; !ok {
			return nil, nil, &NotSameCodeError{Installed: installed, Unit: u, What: "function " + fn.display(), Reason: t.why[fn]}
		}
		proof.Functions++
	}
	for u := range units {
		proof.Units = append(proof.Units, u)
	}
	sort.Strings(proof.Units)
	if t.idi != nil {
		if err := t.checkLayouts(p, fixed); err != nil {
			return nil, nil, err
		}
		proof.LayoutsChecked = true
	} else {
		if !opts.CodeAlone {
			return nil, nil, &SymbolsNeededError{Installed: installed}
		}
		for _, fn := range r.funcs {
			if _, ok := t.delta[fn]; !ok {
				t.proveSearch(fn)
			}
			if _, ok := t.delta[fn]; !ok {
				return nil, nil, &NotSameCodeError{Installed: installed, Unit: di.unitOf(fn), What: "function " + fn.display(), Reason: t.why[fn] +
					"; without the installed binary's debug information (its -dbgsym package) only a binary whose code is all the rebuild's can be retargeted"}
			}
		}
		proof.AllCode = true
	}

	out := *p
	out.Functions = slices.Clone(p.Functions)
	out.Relocs = slices.Clone(p.Relocs)
	for i := range out.Functions {
		f := &out.Functions[i]
		if !f.Replaces() {
			continue
		}
		fn := r.funcAt(f.OldAddr)
		addr := uint64(int64(f.OldAddr) + t.delta[fn])
		code, ok := in.bytesAt(addr, f.OldSize)
		if !ok {
			return nil, nil, &NotSameCodeError{Installed: installed, What: "function " + fn.display(), Reason: "lies outside the installed file's sections"}
		}
		f.OldAddr, f.OldSHA256 = addr, sha256.Sum256(code)
	}
	for i := range out.Relocs {
		rl := &out.Relocs[i]
		if rl.Target.Kind != patch.InModule {
			continue
		}
		a, err := t.translate(rl.Target.Addr)
		if err != nil {
			return nil, nil, err
		}
		if a != rl.Target.Addr {
			proof.Moved++
		} else {
			proof.Same++
		}
		rl.Target.Addr = a
	}
	if !proof.LayoutsChecked {
		// The layouts were compared between the two rebuilds, not with
		// the installed binary: the manifest must not claim they were.
		out.Flags &^= patch.FlagLayoutChecked
	}
	out.Target.BuildID = slices.Clone(in.buildID)
	out.Target.Name = filepath.Base(installed)
	return &out, proof, nil
}

// newRetarget opens both files and proves what it can of the module.
func newRetarget(rebuilt, installed string, opts RetargetOptions) (*retarget, *debugInfo, error) {
	r, err := openModule(rebuilt)
	if err != nil {
		return nil, nil, err
	}
	in, err := openInstalled(installed, opts.Symbols)
	if err != nil {
		return nil, nil, err
	}
	if in.typ != r.typ {
		return nil, nil, &InputError{Path: installed, Reason: fmt.Sprintf("is a %v but the rebuild is a %v", in.typ, r.typ)}
	}
	di, err := loadDebugInfo(rebuilt)
	if err != nil {
		return nil, nil, &InputError{Path: rebuilt, Reason: "reading DWARF: " + err.Error()}
	}
	if di == nil {
		return nil, nil, &InputError{Path: rebuilt, Reason: "has no DWARF (-g): the compile unit of each function cannot be told, so no per-unit proof can be made"}
	}
	if unit := ltoUnit(di.d); unit != "" {
		return nil, nil, &InputError{Path: rebuilt, Reason: fmt.Sprintf("was built with link-time optimisation (%s): code may be inlined across compile units, so a per-unit proof does not hold", unit)}
	}
	t := &retarget{r: r, in: in, symbols: opts.Symbols != "",
		fields: map[*symbol][]field{}, delta: map[*symbol]int64{}, why: map[*symbol]string{}, ev: map[uint64]int64{}, bad: map[uint64]bool{}}
	if t.rframes, err = loadFrames(rebuilt); err != nil {
		return nil, nil, err
	}
	if t.iframes, err = loadFrames(installed); err != nil {
		return nil, nil, err
	}
	if err := sameTLS(rebuilt, installed); err != nil {
		return nil, nil, err
	}
	if opts.Symbols != "" {
		if t.idi, err = loadDebugInfo(opts.Symbols); err != nil {
			return nil, nil, &InputError{Path: opts.Symbols, Reason: "reading DWARF: " + err.Error()}
		}
	}
	t.proveAll()
	return t, di, nil
}

func loadFrames(path string) (*unwind.Table, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, &InputError{Path: path, Reason: err.Error()}
	}
	defer f.Close()
	tab, err := unwind.Load(f)
	if err != nil {
		return nil, &InputError{Path: path, Reason: "reading call frame information: " + err.Error()}
	}
	return tab, nil
}

// sameTLS refuses binaries whose thread-local storage differs: code keeps
// thread-local offsets as link-time constants.
func sameTLS(rebuilt, installed string) error {
	tls := func(path string) (*elf.ProgHeader, error) {
		f, err := elf.Open(path)
		if err != nil {
			return nil, &InputError{Path: path, Reason: err.Error()}
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_TLS {
				h := p.ProgHeader
				return &h, nil
			}
		}
		return nil, nil
	}
	a, err := tls(rebuilt)
	if err != nil {
		return err
	}
	b, err := tls(installed)
	if err != nil {
		return err
	}
	if (a == nil) != (b == nil) || a != nil && (a.Memsz != b.Memsz || a.Filesz != b.Filesz || a.Align != b.Align) {
		return &NotSameCodeError{Installed: installed, What: "thread-local storage", Reason: "differs in size or alignment from the rebuild's; code keeps thread-local offsets as constants"}
	}
	return nil
}

// checkLayouts compares the layout of every type the patch's code uses
// (the fixed build's DWARF) with the installed binary's DWARF.
func (t *retarget) checkLayouts(p *patch.Patch, fixed string) error {
	fm, err := openModule(fixed)
	if err != nil {
		return err
	}
	fdi, err := loadDebugInfo(fixed)
	if err != nil || fdi == nil {
		return &InputError{Path: fixed, Reason: "has no readable DWARF: the layouts of the types the fix uses cannot be compared with the installed binary's"}
	}
	for _, f := range p.Functions {
		if f.NewSize == 0 {
			continue
		}
		key := f.Name
		if f.File != "" {
			key = f.File + ":" + f.Name
		}
		fn := fm.byKey[key]
		if fn == nil {
			return &InputError{Path: fixed, Reason: fmt.Sprintf("has no function %s that the patch carries", key)}
		}
		fields, _, err := fm.codeFields(fn)
		if err != nil {
			return err
		}
		roots, ok := fm.layoutRoots(fdi, fn, fields)
		if !ok {
			return &NotSameCodeError{Installed: t.in.path, What: "function " + fn.display(), Reason: "has no DWARF in the fixed build: the layouts of the types it uses cannot be compared"}
		}
		if err := sameLayouts(fdi, t.idi, roots, fn.display()); err != nil {
			return fmt.Errorf("the installed binary's debug information defines a type the fix uses otherwise than the rebuild: %w", err)
		}
	}
	return nil
}

// unitOf returns the compile unit whose DWARF holds fn's code, or "".
func (di *debugInfo) unitOf(fn *symbol) string {
	if off, ok := di.subprogramAt(fn.addr); ok {
		return di.cuOf(off)
	}
	return ""
}

// UnitProof is what the per-function proof finds for one compile unit.
type UnitProof struct {
	Unit              string
	Functions, Proven int
	// First is the first function not proven and why ("" when all are).
	First string
}

// ProveUnits proves, compile unit by compile unit, which parts of the
// installed binary hold the rebuild's code: a fix confined to a unit
// whose functions are all proven can be retargeted (Retarget). Units are
// sorted by name; functions without a unit (the C runtime) are left out.
func ProveUnits(rebuilt, installed string, opts RetargetOptions) ([]UnitProof, error) {
	t, di, err := newRetarget(rebuilt, installed, opts)
	if err != nil {
		return nil, err
	}
	byUnit := map[string]*UnitProof{}
	for _, fn := range t.r.funcs {
		u := di.unitOf(fn)
		if u == "" {
			continue
		}
		up := byUnit[u]
		if up == nil {
			up = &UnitProof{Unit: u}
			byUnit[u] = up
		}
		up.Functions++
		if _, ok := t.delta[fn]; !ok {
			t.proveSearch(fn)
		}
		if _, ok := t.delta[fn]; ok {
			up.Proven++
		} else if up.First == "" {
			up.First = fn.display() + " " + t.why[fn]
		}
	}
	out := make([]UnitProof, 0, len(byUnit))
	for _, up := range byUnit {
		out = append(out, *up)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unit < out[j].Unit })
	return out, nil
}

// openInstalled reads the installed binary's image and dynamic
// relocations, and its symbols: all of them from the symbols file, else
// the exported ones.
func openInstalled(path, symbols string) (*module, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, &InputError{Path: path, Reason: "not an ELF file: " + err.Error()}
	}
	defer f.Close()
	m, err := openImage(path, f)
	if err != nil {
		return nil, err
	}
	if _, err := m.scanRelocs(f, false); err != nil {
		return nil, err
	}
	if symbols != "" {
		sf, err := elf.Open(symbols)
		if err != nil {
			return nil, &InputError{Path: symbols, Reason: "not an ELF file: " + err.Error()}
		}
		defer sf.Close()
		sm, err := openImage(symbols, sf)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(sm.buildID, m.buildID) {
			return nil, &InputError{Path: symbols, Reason: fmt.Sprintf("has build-id %x, not the installed file's %x: these are the symbols of another build", sm.buildID, m.buildID)}
		}
		if err := m.readSymbols(sf); err != nil {
			return nil, &InputError{Path: symbols, Reason: "no symbol table (.symtab): not a debug file"}
		}
		return m, nil
	}
	dyn, _ := f.DynamicSymbols()
	for _, es := range dyn {
		typ := elf.ST_TYPE(es.Info)
		if es.Section == elf.SHN_UNDEF || es.Value == 0 || (typ != elf.STT_FUNC && typ != elf.STT_OBJECT) {
			continue
		}
		base, _ := splitVersion(es.Name)
		s := &symbol{name: base, base: base, key: base, addr: es.Value, size: es.Size, typ: typ, bind: elf.ST_BIND(es.Info), shndx: es.Section}
		s.sec = m.sectionAt(s.addr)
		m.addKey(s)
	}
	return m, nil
}

// ltoUnit returns a compile unit built with -flto, or "".
func ltoUnit(d *dwarf.Data) string {
	rd := d.Reader()
	for {
		e, err := rd.Next()
		if err != nil || e == nil {
			return ""
		}
		if e.Tag == dwarf.TagCompileUnit {
			if prod, _ := e.Val(dwarf.AttrProducer).(string); strings.Contains(prod, "-flto") || strings.HasPrefix(prod, "GNU GIMPLE") {
				name, _ := e.Val(dwarf.AttrName).(string)
				return name
			}
		}
		rd.SkipChildren()
	}
}

// proveAll proves what it can of the whole module, in address order,
// until a pass finds nothing new: each proven function's references tell
// where its callees and data lie.
func (t *retarget) proveAll() {
	for pass := 0; pass < 4; pass++ {
		progress := false
		var last int64
		var lastSec *section
		for _, fn := range t.r.funcs {
			if d, ok := t.delta[fn]; ok {
				last, lastSec = d, fn.sec
				continue
			}
			for _, d := range t.candidates(fn, last, lastSec) {
				if t.prove(fn, d) {
					last, lastSec = d, fn.sec
					progress = true
					break
				}
			}
		}
		t.index()
		if !progress {
			return
		}
	}
}

// candidates are the shifts at which fn may lie in the installed binary.
func (t *retarget) candidates(fn *symbol, last int64, lastSec *section) []int64 {
	if s, ok := t.in.byKey[fn.key]; ok {
		if s == nil {
			t.why[fn] = "has a name shared by two symbols of the installed binary"
			return nil
		}
		if t.symbols && s.size != fn.size {
			t.why[fn] = fmt.Sprintf("is %d bytes in the installed binary and %d in the rebuild", s.size, fn.size)
			return nil
		}
		return []int64{int64(s.addr) - int64(fn.addr)}
	}
	if t.symbols {
		t.why[fn] = "is not in the installed binary's symbol table"
		return nil
	}
	var out []int64
	if d, ok := t.ev[fn.addr]; ok && !t.bad[fn.addr] {
		out = append(out, d)
	}
	if lastSec == fn.sec && !slices.Contains(out, last) {
		out = append(out, last)
	}
	if !slices.Contains(out, 0) {
		out = append(out, 0)
	}
	return out
}

// proveSearch is the last resort for a function that no symbol or
// evidence places: the one place in the installed code where its bytes
// match. Not done with a symbol table, which is authoritative.
func (t *retarget) proveSearch(fn *symbol) {
	if t.symbols {
		return
	}
	if _, named := t.in.byKey[fn.key]; named {
		return
	}
	code, ok := t.r.bytesAt(fn.addr, fn.size)
	if !ok {
		return
	}
	fields, err := t.fieldsOf(fn)
	if err != nil {
		return
	}
	// The longest run of bytes that no field covers anchors the search.
	var anchor, at, prev uint64
	for _, f := range append(fields, field{off: fn.size}) {
		if f.off > prev && f.off-prev > anchor {
			anchor, at = f.off-prev, prev
		}
		prev = f.off + uint64(fieldSize(f))
	}
	if anchor < 8 {
		t.why[fn] = "was not found: no symbol names it and it is too short to be found by its bytes"
		return
	}
	needle := code[at : at+anchor]
	var found []int64
	for _, sec := range t.in.sections {
		if sec.kind != secCode || sec.data == nil {
			continue
		}
		for i := 0; ; {
			j := bytes.Index(sec.data[i:], needle)
			if j < 0 {
				break
			}
			start := int64(sec.addr) + int64(i+j) - int64(at)
			d := start - int64(fn.addr)
			if t.matches(fn, d, fields) != nil {
				found = append(found, d)
			}
			i += j + 1
		}
	}
	switch len(found) {
	case 1:
		t.prove(fn, found[0])
		t.index()
	case 0:
		t.why[fn] = "was not found in the installed code: no place holds the same code (it was compiled differently)"
	default:
		t.why[fn] = fmt.Sprintf("matches %d places in the installed code, which cannot be told apart", len(found))
	}
}

func fieldSize(f field) int {
	if f.keep {
		return 4
	}
	return f.typ.Size()
}

// prove checks that fn lies at its rebuilt address plus d in the installed
// binary, with the same code, and records what its fields refer to there.
func (t *retarget) prove(fn *symbol, d int64) bool {
	fields, err := t.fieldsOf(fn)
	if err != nil {
		t.why[fn] = "cannot be read in the rebuild: " + err.Error()
		return false
	}
	pairs := t.matches(fn, d, fields)
	if pairs == nil {
		return false
	}
	t.delta[fn] = d
	delete(t.why, fn)
	t.note(fn.addr, d)
	for _, p := range pairs {
		t.note(p[0], int64(p[1]-p[0]))
	}
	return true
}

// matches compares fn with the installed bytes at its address plus d and
// returns, for each relocated field, the rebuilt target and the installed
// one; nil (with the reason in t.why) when the code differs.
func (t *retarget) matches(fn *symbol, d int64, fields []field) [][2]uint64 {
	ai := uint64(int64(fn.addr) + d)
	cr, _ := t.r.bytesAt(fn.addr, fn.size)
	ci, ok := t.in.bytesAt(ai, fn.size)
	if !ok || t.in.sectionAt(ai).kind != secCode {
		t.why[fn] = fmt.Sprintf("is not in the installed code at %#x", ai)
		return nil
	}
	// The call frame information must agree that a function of this
	// length starts there (where the rebuild has an FDE for it).
	if rb, re, rok, _ := t.rframes.Range(fn.addr); rok && rb == fn.addr {
		ib, ie, iok, _ := t.iframes.Range(ai)
		if !iok || ib != ai || ie-ib != re-rb {
			t.why[fn] = fmt.Sprintf("has no function of its length starting at %#x in the installed binary's call frame information", ai)
			return nil
		}
	}
	pairs := [][2]uint64{}
	var from uint64
	for _, f := range fields {
		n := uint64(fieldSize(f))
		if !bytes.Equal(cr[from:f.off], ci[from:f.off]) {
			t.why[fn] = fmt.Sprintf("differs from the rebuild at +%#x (installed at %#x)", from+uint64(firstDiff(cr[from:f.off], ci[from:f.off])), ai)
			return nil
		}
		from = f.off + n
		if f.keep || f.ext && f.typ != patch.PC32 {
			if !bytes.Equal(cr[f.off:from], ci[f.off:from]) {
				t.why[fn] = fmt.Sprintf("differs from the rebuild in a link-time constant at +%#x", f.off)
				return nil
			}
			continue
		}
		var ti uint64
		switch f.typ {
		case patch.PC32:
			end := int64(f.off) - f.addend
			ti = uint64(int64(ai) + end + int64(int32(binary.LittleEndian.Uint32(ci[f.off:]))))
		case patch.Abs64:
			ti = binary.LittleEndian.Uint64(ci[f.off:])
		case patch.Abs32:
			ti = uint64(binary.LittleEndian.Uint32(ci[f.off:]))
		case patch.Abs32S:
			ti = uint64(int64(int32(binary.LittleEndian.Uint32(ci[f.off:]))))
		default:
			t.why[fn] = fmt.Sprintf("has a field of type %v at +%#x", f.typ, f.off)
			return nil
		}
		pairs = append(pairs, [2]uint64{f.target, ti})
	}
	if !bytes.Equal(cr[from:], ci[from:]) {
		t.why[fn] = fmt.Sprintf("differs from the rebuild at +%#x (installed at %#x)", from+uint64(firstDiff(cr[from:], ci[from:])), ai)
		return nil
	}
	return pairs
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func (t *retarget) note(addr uint64, d int64) {
	if prev, ok := t.ev[addr]; ok && prev != d {
		t.bad[addr] = true
		return
	}
	t.ev[addr] = d
}

func (t *retarget) index() {
	t.evs = t.evs[:0]
	for a := range t.ev {
		t.evs = append(t.evs, a)
	}
	slices.Sort(t.evs)
}

// shiftIn returns the one shift that the evidence in [lo, hi) agrees on.
func (t *retarget) shiftIn(lo, hi uint64) (int64, bool) {
	i := sort.Search(len(t.evs), func(i int) bool { return t.evs[i] >= lo })
	var d int64
	found := false
	for ; i < len(t.evs) && t.evs[i] < hi; i++ {
		a := t.evs[i]
		if t.bad[a] {
			return 0, false
		}
		if found && t.ev[a] != d {
			return 0, false
		}
		d, found = t.ev[a], true
	}
	return d, found
}

// translate moves a rebuilt address that the patch refers to into the
// installed binary.
func (t *retarget) translate(a uint64) (uint64, error) {
	at := func(d int64) uint64 { return uint64(int64(a) + d) }
	fail := func(what, reason string) error {
		return &NotSameCodeError{Installed: t.in.path, What: fmt.Sprintf("the patch's reference to %s", what), Reason: reason}
	}
	if fn := t.r.funcAt(a); fn != nil {
		if d, ok := t.delta[fn]; ok {
			return at(d), nil
		}
		if a == fn.addr {
			// The entry of a function outside the proven units (a call
			// to another file's function): what matters is where the
			// installed binary has it, not its code, which the installed
			// program's own callers run too. Its symbol, or where proven
			// code of the installed binary calls it.
			if s := t.in.byKey[fn.key]; s != nil && s.typ == elf.STT_FUNC {
				return s.addr, nil
			}
			if d, ok := t.ev[a]; ok && !t.bad[a] {
				return at(d), nil
			}
		}
		t.proveSearch(fn)
		if d, ok := t.delta[fn]; ok {
			return at(d), nil
		}
		return 0, fail("function "+fn.display(), t.why[fn])
	}
	if d, ok := t.ev[a]; ok && !t.bad[a] {
		return at(d), nil
	}
	sec := t.r.sectionAt(a)
	if sec == nil {
		return 0, fail(fmt.Sprintf("%#x", a), "lies outside the rebuild's sections")
	}
	if sec.kind == secGOT {
		return t.gotSlot(a)
	}
	// Data: a named object, or the unnamed chunk that holds a. Read-only
	// data must also hold the same bytes in the installed binary.
	var name string
	var start, end uint64
	var res uint64
	var found bool
	if o := t.r.objectAt(a); o != nil {
		name, start, end = o.display(), o.addr, o.addr+o.size
		if s, ok := t.in.byKey[o.key]; ok && s != nil {
			if s.size != o.size {
				return 0, fail(o.display(), fmt.Sprintf("is %d bytes in the installed binary and %d in the rebuild", s.size, o.size))
			}
			res, found = s.addr+(a-o.addr), true
		} else if d, ok := t.shiftIn(o.addr, o.addr+o.size+1); ok {
			res, found = at(d), true
		} else {
			return 0, fail(o.display(), "has no symbol in the installed binary and no proven code refers to it")
		}
	} else {
		start, end = t.r.plainExtent(a)
		name = fmt.Sprintf("%s+%#x", sec.name, start-sec.addr)
		d, ok := t.shiftIn(start, end)
		if !ok {
			return 0, fail(name, "is unnamed data that no proven code of the installed binary refers to")
		}
		res, found = at(d), true
	}
	if found && sec.kind == secROData && sec.data != nil {
		if why := t.sameRO(start, end, int64(res)-int64(a)); why != "" {
			return 0, fail("read-only data "+name, why)
		}
	}
	return res, nil
}

// sameRO compares the read-only chunk [start, end) of the rebuild with the
// installed bytes d further on, except the fields that relocations fill
// (pointers, whose values are addresses).
func (t *retarget) sameRO(start, end uint64, d int64) string {
	rb, ok := t.r.bytesAt(start, end-start)
	if !ok {
		return ""
	}
	ib, ok := t.in.bytesAt(uint64(int64(start)+d), end-start)
	if !ok {
		return "lies outside the installed binary's data"
	}
	masked := make([]bool, len(rb))
	cover := func(off uint64, n uint64) {
		for i := off; i < off+n && i >= start && i < end; i++ {
			masked[i-start] = true
		}
	}
	for _, rl := range t.r.relocsIn(start-min(start, 7), end-start+7) {
		cover(rl.off, relocSize(rl.typ))
	}
	for off := start - min(start, 7); off < end; off++ {
		if dr := t.r.dyn[off]; dr != nil {
			cover(off, 8)
		}
	}
	for i := range rb {
		if !masked[i] && rb[i] != ib[i] {
			return fmt.Sprintf("holds other bytes in the installed binary (at +%#x)", i)
		}
	}
	return ""
}

// gotSlot finds the installed GOT slot that the dynamic linker fills the
// same way as the rebuilt slot at a.
func (t *retarget) gotSlot(a uint64) (uint64, error) {
	rd := t.r.dyn[a]
	fail := func(reason string) error {
		return &NotSameCodeError{Installed: t.in.path, What: fmt.Sprintf("the patch's reference to the GOT slot at %#x", a), Reason: reason}
	}
	if rd == nil {
		return 0, fail("has no dynamic relocation in the rebuild")
	}
	want := rd.addend
	if rd.typ == elf.R_X86_64_RELATIVE {
		v, err := t.translate(uint64(rd.addend))
		if err != nil {
			return 0, err
		}
		want = int64(v)
	}
	var found []uint64
	for _, d := range t.in.dynSorted() {
		if d.typ == rd.typ && d.sym == rd.sym && d.addend == want {
			if s := t.in.sectionAt(d.off); s != nil && s.kind == secGOT {
				found = append(found, d.off)
			}
		}
	}
	if len(found) != 1 {
		return 0, fail(fmt.Sprintf("matches %d slots of the installed binary (%v %s)", len(found), rd.typ, rd.sym))
	}
	return found[0], nil
}
