package builder

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Line numbers recognised with the DWARF line table.
//
// A __LINE__ passed on its own (accounting(parser, tok, __LINE__)) has no
// __FILE__ beside it to say what it is. With -g, each build's line table
// (.debug_line) says which source line every instruction comes from, the
// inlined calls (DW_TAG_inlined_subroutine) say where they were called
// from, and the two builds, side by side, say how far each statement
// moved. An immediate that differs between the builds is a line number
// when a place of the statement that loads it or of the call it feeds
// moved by exactly the difference of the immediates and the number lies
// within that statement. See lineByDWARF for the exact rule.
//
// The tables are read lazily: a module's DWARF is opened the first time a
// differing immediate needs it, and a compile unit's rows the first time a
// function of that unit does.

// lineRow is one row of a line table within a function.
type lineRow struct {
	off  uint64 // from the function's start
	file string // base name of the source file
	path string // as the line table names it
	line int
}

// lineTables is the lazily read line information of one module.
type lineTables struct {
	d     *dwarf.Data // nil when the module has no DWARF
	cus   map[dwarf.Offset]*unitLines
	subs  map[dwarf.Offset][]subprogram // a unit's functions with their code ranges
	sites map[dwarf.Offset][]inlineSite // a function's inlined calls
	spans []unitSpan                    // units' code ranges by address, read on first use
}

// unitSpan is one code range of a compile unit.
type unitSpan struct {
	lo, hi uint64
	cu     *dwarf.Entry
}

// inlineSite is a call that gcc inlined: the code ranges of the inlined
// body, how deep it is nested, the function inlined and the line of the
// call (DW_AT_call_line).
type inlineSite struct {
	ranges [][2]uint64
	depth  int
	name   string
	file   string // base name of the file of the call
	path   string // as the line table names it
	line   int64
}

// unitLines is the line table of one compile unit.
type unitLines struct {
	entries []dwarf.LineEntry // rows with a file, end-of-sequence rows dropped, by address
	files   []*dwarf.LineFile
	lines   map[string][]int // base name of a file -> its lines with rows, ascending
	compDir string           // DW_AT_comp_dir, which relative file names are under
}

// path returns where a file of the unit's table is, joined to the unit's
// compilation directory when relative.
func (u *unitLines) path(name string) string {
	if filepath.IsAbs(name) || u.compDir == "" {
		return name
	}
	return filepath.Join(u.compDir, name)
}

// nextLine returns the first line after line that has a row of file in the
// unit's table, or 0 if none does.
func (u *unitLines) nextLine(file string, line int) int {
	ls := u.lines[file]
	k := sort.SearchInts(ls, line+1)
	if k == len(ls) {
		return 0
	}
	return ls[k]
}

// lineTablesOf returns the line tables of m, opening its DWARF on first use.
func (b *builder) lineTablesOf(m *module) *lineTables {
	if b.lineTabs == nil {
		b.lineTabs = map[*module]*lineTables{}
	}
	lt := b.lineTabs[m]
	if lt != nil {
		return lt
	}
	lt = &lineTables{cus: map[dwarf.Offset]*unitLines{}, subs: map[dwarf.Offset][]subprogram{}, sites: map[dwarf.Offset][]inlineSite{}}
	b.lineTabs[m] = lt
	f, err := elf.Open(m.path)
	if err != nil {
		return lt
	}
	defer f.Close()
	if f.Section(".debug_info") == nil || (f.Section(".debug_line") == nil && f.Section(".zdebug_line") == nil) {
		return lt
	}
	d, err := f.DWARF()
	if err != nil {
		debugf("DWARF of %s cannot be read, line numbers recognised without it: %v", m.path, err)
		return lt
	}
	lt.d = d
	return lt
}

// funcRows returns the line table rows that fall in fn's code, in address
// order, or nil when the table does not describe fn from its first byte.
func (lt *lineTables) funcRows(fn *symbol) []lineRow {
	if lt.d == nil || fn.size == 0 {
		return nil
	}
	u := lt.unitOf(fn)
	if u == nil {
		return nil
	}
	end := fn.addr + fn.size
	var rows []lineRow
	k := sort.Search(len(u.entries), func(i int) bool { return u.entries[i].Address >= fn.addr })
	for _, e := range u.entries[k:] {
		if e.Address >= end {
			break
		}
		rows = append(rows, lineRow{off: e.Address - fn.addr, file: filepath.Base(e.File.Name), path: u.path(e.File.Name), line: e.Line})
	}
	if len(rows) == 0 || rows[0].off != 0 {
		return nil
	}
	return rows
}

// unitOf returns the line table of the unit that holds fn's code, read on
// first use; nil when there is none.
func (lt *lineTables) unitOf(fn *symbol) *unitLines {
	if lt.d == nil {
		return nil
	}
	cu := lt.unitEntry(fn.addr)
	if cu == nil {
		return nil
	}
	u, ok := lt.cus[cu.Offset]
	if !ok {
		u = readLines(lt.d, cu)
		lt.cus[cu.Offset] = u
	}
	return u
}

// unitEntry returns the compile unit whose code holds addr. The units'
// code ranges are read once, on first use (dwarf.Reader.SeekPC reads them
// again on every call).
func (lt *lineTables) unitEntry(addr uint64) *dwarf.Entry {
	if lt.spans == nil {
		lt.spans = []unitSpan{}
		r := lt.d.Reader()
		for {
			e, err := r.Next()
			if err != nil || e == nil {
				break
			}
			if e.Tag == dwarf.TagCompileUnit || e.Tag == dwarf.TagPartialUnit {
				if rs, err := lt.d.Ranges(e); err == nil {
					for _, rg := range rs {
						lt.spans = append(lt.spans, unitSpan{lo: rg[0], hi: rg[1], cu: e})
					}
				}
			}
			r.SkipChildren()
		}
		sort.Slice(lt.spans, func(i, j int) bool { return lt.spans[i].lo < lt.spans[j].lo })
	}
	k := sort.Search(len(lt.spans), func(i int) bool { return lt.spans[i].lo > addr })
	for i := k - 1; i >= 0 && i >= k-8; i-- {
		if addr >= lt.spans[i].lo && addr < lt.spans[i].hi {
			return lt.spans[i].cu
		}
	}
	return nil
}

// readLines reads every row of a compile unit's line table.
func readLines(d *dwarf.Data, cu *dwarf.Entry) *unitLines {
	u := &unitLines{lines: map[string][]int{}}
	u.compDir, _ = cu.Val(dwarf.AttrCompDir).(string)
	lr, err := d.LineReader(cu)
	if err != nil || lr == nil {
		return u
	}
	for {
		var e dwarf.LineEntry
		if err := lr.Next(&e); err != nil {
			if !errors.Is(err, io.EOF) {
				debugf("line table of %v: %v", cu.Val(dwarf.AttrName), err)
			}
			break
		}
		if e.File != nil && !e.EndSequence {
			u.entries = append(u.entries, e)
			name := filepath.Base(e.File.Name)
			u.lines[name] = append(u.lines[name], e.Line)
		}
	}
	// By address, for funcRows; rows at one address keep their order.
	sort.SliceStable(u.entries, func(i, j int) bool { return u.entries[i].Address < u.entries[j].Address })
	u.files = lr.Files()
	for name, ls := range u.lines {
		slices.Sort(ls)
		u.lines[name] = slices.Compact(ls)
	}
	return u
}

// linePair holds the aligned line rows of a function in both builds, once
// read; ok is false when either build lacks them or they do not align.
type linePair struct {
	o, f []lineRow
	ok   bool
}

// alignedRows returns the rows of o and f when both builds describe the
// function with the same rows at the same offsets in the same files, the
// line numbers alone being free to differ: the same statements, moved.
func (b *builder) alignedRows(o, f *symbol) linePair {
	ro := b.lineTablesOf(b.orig).funcRows(o)
	rf := b.lineTablesOf(b.fixed).funcRows(f)
	if len(ro) == 0 || len(ro) != len(rf) {
		return linePair{}
	}
	for i := range ro {
		if ro[i].off != rf[i].off || ro[i].file != rf[i].file {
			return linePair{}
		}
	}
	return linePair{o: ro, f: rf, ok: true}
}

// maxCallLines bounds how far below the first line of a call its
// __LINE__ may be: in a call written over several lines (f(a,\n b,
// __LINE__)) __LINE__ is the line it is written on, while DWARF records
// the line where the call starts.
const maxCallLines = 10

// lineByDWARF reports whether the immediates vo (original) and vf (fixed),
// loaded at byte offset at of the functions o and f and fed to the call at
// byte offset call (-1 if none follows), are the line of their own
// statement. A place of that statement is
//
//   - the row of the line table that covers the load, or the one that
//     covers the call, in the original and at the same place in the fixed
//     build (the rows of both builds align);
//   - or the inlined call (DW_TAG_inlined_subroutine, its DW_AT_call_line)
//     whose body holds the load or the call, the chains of inlined calls
//     there being the same functions in both builds.
//
// The immediates are the statement's line when, for one such place at line
// Lo in the original and Lf in the fixed build, vf-vo = Lf-Lo (the number
// moved exactly as the statement did) and vo lies in the statement: Lo <=
// vo < the next line of that file with a row in the unit's line table, and
// vo-Lo <= maxCallLines (likewise vf from Lf). A call written over several
// lines is recorded at its first line, and no statement starts before its
// last. Only the statement's own places count: a row elsewhere in the
// function, such as its first line or a line after the call, proves
// nothing about this number.
func (b *builder) lineByDWARF(o, f *symbol, rows linePair, at, call int, vo, vf int64) bool {
	if vo == vf {
		return false
	}
	lo, lf := b.lineTablesOf(b.orig), b.lineTablesOf(b.fixed)
	uo, uf := lo.unitOf(o), lf.unitOf(f)
	if uo == nil || uf == nil {
		return false
	}
	// matches reports whether a place of file at line Lo (original) and Lf
	// (fixed) is the statement whose line the immediates are.
	matches := func(file, po, pf string, Lo, Lf int64) bool {
		return vf-vo == Lf-Lo && uo.inStatement(file, Lo, vo) && uf.inStatement(file, Lf, vf) &&
			!b.sources.writesNumber(po, vo) && !b.sources.writesNumber(pf, vf)
	}
	for _, x := range []int{at, call} {
		if x < 0 {
			continue
		}
		if rows.ok {
			for _, i := range coveringRows(rows.o, uint64(x)) {
				if matches(rows.o[i].file, rows.o[i].path, rows.f[i].path, int64(rows.o[i].line), int64(rows.f[i].line)) {
					return true
				}
			}
		}
		co, cf := lo.inlineChain(o, o.addr+uint64(x)), lf.inlineChain(f, f.addr+uint64(x))
		if len(co) != len(cf) {
			continue
		}
		for i := range co {
			if co[i].name != cf[i].name || co[i].file != cf[i].file || co[i].depth != cf[i].depth {
				break
			}
			if matches(co[i].file, co[i].path, cf[i].path, co[i].line, cf[i].line) {
				return true
			}
		}
	}
	return false
}

// sourceLines caches the source files that the line tables name, read
// only to check a number already taken for a line.
type sourceLines map[string][]string

// writesNumber reports whether line n of the source file at path, when it
// can be read, writes the number n itself as a literal (clamp(n, 61) on
// line 61): a real constant that happens to equal its line, not __LINE__.
// A file that cannot be read says nothing, nor does a relative path: a
// build made with -fdebug-prefix-map (Debian's) names its files relative
// to a directory that no longer says where they are.
func (sl *sourceLines) writesNumber(path string, n int64) bool {
	if !filepath.IsAbs(path) {
		return false
	}
	if *sl == nil {
		*sl = sourceLines{}
	}
	lines, ok := (*sl)[path]
	if !ok {
		if data, err := os.ReadFile(path); err == nil && len(data) < 64<<20 {
			lines = strings.Split(string(data), "\n")
		}
		(*sl)[path] = lines
	}
	if n < 1 || n > int64(len(lines)) {
		return false
	}
	return numberToken(lines[n-1], strconv.FormatInt(n, 10))
}

// numberToken reports whether text holds num as a whole number token (not
// part of an identifier or of a longer number).
func numberToken(text, num string) bool {
	isWord := func(c byte) bool {
		return c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	for i := 0; ; {
		k := strings.Index(text[i:], num)
		if k < 0 {
			return false
		}
		at, end := i+k, i+k+len(num)
		if (at == 0 || !isWord(text[at-1])) && (end == len(text) || !isWord(text[end])) {
			return true
		}
		i = at + 1
	}
}

// inStatement reports whether line v can belong to the statement that
// starts at line l of file: l <= v, within maxCallLines, and no line of the
// file between them has a row in the unit's table.
func (u *unitLines) inStatement(file string, l, v int64) bool {
	if v < l || v-l > maxCallLines {
		return false
	}
	if v == l {
		return true
	}
	n := u.nextLine(file, int(l))
	return n != 0 && v < int64(n)
}

// coveringRows returns the index of the row that covers offset x: the
// last row that starts at or before it. Where several rows start at one
// address, the earlier ones are empty (gcc's location views: a function's
// opening line, then its first statement) and the last one holds the code.
func coveringRows(rows []lineRow, x uint64) []int {
	k := sort.Search(len(rows), func(i int) bool { return rows[i].off > x })
	if k == 0 {
		return nil
	}
	return []int{k - 1}
}

// inlineChain returns the inlined calls whose code holds addr, outermost
// first, in the function fn.
func (lt *lineTables) inlineChain(fn *symbol, addr uint64) []inlineSite {
	if lt.d == nil {
		return nil
	}
	cu := lt.unitEntry(fn.addr)
	if cu == nil {
		return nil
	}
	subs, ok := lt.subs[cu.Offset]
	if !ok {
		r := lt.d.Reader()
		r.Seek(cu.Offset)
		if _, err := r.Next(); err != nil {
			return nil
		}
		subs = unitSubprograms(lt.d, r)
		lt.subs[cu.Offset] = subs
	}
	var sub dwarf.Offset
	found := false
	for _, s := range subs {
		for _, rg := range s.ranges {
			if addr >= rg[0] && addr < rg[1] {
				sub, found = s.off, true
			}
		}
	}
	if !found {
		return nil
	}
	sites, ok := lt.sites[sub]
	if !ok {
		u := lt.unitOf(fn)
		if u == nil {
			return nil
		}
		sites = inlineSites(lt.d, sub, u)
		lt.sites[sub] = sites
	}
	var chain []inlineSite
	for _, s := range sites {
		for _, rg := range s.ranges {
			if addr >= rg[0] && addr < rg[1] {
				chain = append(chain, s)
				break
			}
		}
	}
	sort.SliceStable(chain, func(i, j int) bool { return chain[i].depth < chain[j].depth })
	return chain
}

// unitSubprograms lists the functions with code of the unit that r has
// just read the entry of.
func unitSubprograms(d *dwarf.Data, r *dwarf.Reader) []subprogram {
	var out []subprogram
	for {
		e, err := r.Next()
		if err != nil || e == nil || e.Tag == 0 {
			return out // the end of the unit's children
		}
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit:
			return out
		case dwarf.TagSubprogram:
			if rs, err := d.Ranges(e); err == nil && len(rs) > 0 {
				out = append(out, subprogram{off: e.Offset, ranges: rs})
			}
		}
		if e.Children {
			r.SkipChildren()
		}
	}
}

// inlineSites lists the inlined calls within the function whose DIE is at
// off, at any depth.
func inlineSites(d *dwarf.Data, off dwarf.Offset, u *unitLines) []inlineSite {
	files := u.files
	r := d.Reader()
	r.Seek(off)
	top, err := r.Next()
	if err != nil || top == nil || !top.Children {
		return nil
	}
	var out []inlineSite
	depth := 1
	for depth > 0 {
		e, err := r.Next()
		if err != nil || e == nil {
			return out
		}
		if e.Tag == 0 {
			depth--
			continue
		}
		if e.Tag == dwarf.TagInlinedSubroutine {
			line, _ := e.Val(dwarf.AttrCallLine).(int64)
			file, _ := e.Val(dwarf.AttrCallFile).(int64)
			if rs, err := d.Ranges(e); err == nil && len(rs) > 0 && line > 0 && file >= 0 && file < int64(len(files)) && files[file] != nil {
				out = append(out, inlineSite{ranges: rs, depth: depth, name: originName(d, e), file: filepath.Base(files[file].Name), path: u.path(files[file].Name), line: line})
			}
		}
		if e.Children {
			depth++
		}
	}
	return out
}

// originName is the name of the function an inlined call inlines.
func originName(d *dwarf.Data, e *dwarf.Entry) string {
	for range 4 {
		if n, ok := e.Val(dwarf.AttrName).(string); ok {
			return n
		}
		o, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
		if !ok {
			o, ok = e.Val(dwarf.AttrSpecification).(dwarf.Offset)
		}
		if !ok {
			return ""
		}
		r := d.Reader()
		r.Seek(o)
		if e, _ = r.Next(); e == nil {
			return ""
		}
	}
	return ""
}
