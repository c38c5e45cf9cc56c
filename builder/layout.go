package builder

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// LayoutError reports a type whose layout the fix changed while objects of
// it may already exist in the running process: patched code would read
// them with the new layout.
type LayoutError struct {
	Type     string // e.g. "struct conn"
	Member   string // the first member that differs, "" for a size change alone
	Change   string // e.g. `member "buf" moved from offset 16 to 32`
	Function string // a function of the patch that uses the type
}

func (e *LayoutError) Error() string {
	return fmt.Sprintf("refused: %s changed layout: %s; objects created before the patch would be read with the new layout (used by %s); keep the old layout and add new state elsewhere, or restart the service",
		e.Type, e.Change, e.Function)
}

// debugInfo is the DWARF of one build, indexed for the layout check.
type debugInfo struct {
	d    *dwarf.Data
	cus  []cuRange    // compile units by offset
	subs []subprogram // concrete functions with their code ranges
	// byStart indexes the ranges of subs by start address (built on
	// first use).
	byStart []codeRange
	vars    map[uint64]dwarf.Offset // address of a global or static -> its DIE
	types   map[string][]dwarf.Offset
}

type cuRange struct {
	off  dwarf.Offset
	name string
}

type subprogram struct {
	off    dwarf.Offset
	ranges [][2]uint64
}

// loadDebugInfo reads the DWARF of an ELF file; nil when it has none.
func loadDebugInfo(path string) (*debugInfo, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if f.Section(".debug_info") == nil {
		return nil, nil
	}
	d, err := f.DWARF()
	if err != nil {
		return nil, err
	}
	di := &debugInfo{d: d, vars: map[uint64]dwarf.Offset{}, types: map[string][]dwarf.Offset{}}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return nil, err
		}
		if e == nil {
			break
		}
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit:
			name, _ := e.Val(dwarf.AttrName).(string)
			di.cus = append(di.cus, cuRange{off: e.Offset, name: name})
		case dwarf.TagSubprogram:
			if rs, err := d.Ranges(e); err == nil && len(rs) > 0 {
				di.subs = append(di.subs, subprogram{off: e.Offset, ranges: rs})
			}
		case dwarf.TagVariable:
			if loc, ok := e.Val(dwarf.AttrLocation).([]byte); ok && len(loc) == 9 && loc[0] == 0x03 { // DW_OP_addr
				di.vars[binary.LittleEndian.Uint64(loc[1:])] = e.Offset
			}
		case dwarf.TagStructType, dwarf.TagUnionType, dwarf.TagClassType:
			name, _ := e.Val(dwarf.AttrName).(string)
			if decl, _ := e.Val(dwarf.AttrDeclaration).(bool); name != "" && !decl {
				di.types[name] = append(di.types[name], e.Offset)
			}
		case dwarf.TagTypedef:
			if name, _ := e.Val(dwarf.AttrName).(string); name != "" {
				di.types["typedef "+name] = append(di.types["typedef "+name], e.Offset)
			}
		}
	}
	return di, nil
}

// cuOf returns the name of the compile unit that holds a DIE.
func (di *debugInfo) cuOf(off dwarf.Offset) string {
	i := sort.Search(len(di.cus), func(i int) bool { return di.cus[i].off > off })
	if i == 0 {
		return ""
	}
	return di.cus[i-1].name
}

// subprogramAt returns the DIE of the function whose code holds addr.
func (di *debugInfo) subprogramAt(addr uint64) (dwarf.Offset, bool) {
	if di.byStart == nil {
		for _, s := range di.subs {
			for _, r := range s.ranges {
				di.byStart = append(di.byStart, codeRange{lo: r[0], hi: r[1], off: s.off})
			}
		}
		// Ranges of concrete functions do not overlap; among equal starts
		// the first subprogram wins, as a linear search would have it.
		sort.SliceStable(di.byStart, func(i, j int) bool { return di.byStart[i].lo < di.byStart[j].lo })
	}
	i := sort.Search(len(di.byStart), func(i int) bool { return di.byStart[i].lo > addr })
	found := -1
	for k := i - 1; k >= 0 && k >= i-4; k-- {
		if r := di.byStart[k]; addr >= r.lo && addr < r.hi {
			found = k // keep going: the first of equal starts wins
		}
	}
	if found >= 0 {
		return di.byStart[found].off, true
	}
	// Nested or unusual ranges: the plain search.
	for _, s := range di.subs {
		for _, r := range s.ranges {
			if addr >= r[0] && addr < r[1] {
				return s.off, true
			}
		}
	}
	return 0, false
}

// codeRange is one code range of a subprogram, for lookups by address.
type codeRange struct {
	lo, hi uint64
	off    dwarf.Offset
}

// typesOf collects the types that a DIE and its children name (parameters,
// locals, the return type, inlined functions' own), following abstract
// origins and specifications.
func (di *debugInfo) typesOf(off dwarf.Offset, seen map[dwarf.Offset]bool, out map[dwarf.Offset]bool) {
	if seen[off] {
		return
	}
	seen[off] = true
	r := di.d.Reader()
	r.Seek(off)
	e, err := r.Next()
	if err != nil || e == nil {
		return
	}
	var follow []dwarf.Offset
	visit := func(e *dwarf.Entry) {
		if t, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
			out[t] = true
		}
		for _, a := range []dwarf.Attr{dwarf.AttrAbstractOrigin, dwarf.AttrSpecification} {
			if o, ok := e.Val(a).(dwarf.Offset); ok {
				follow = append(follow, o)
			}
		}
	}
	visit(e)
	if e.Children {
		for depth := 1; depth > 0; {
			c, err := r.Next()
			if err != nil || c == nil {
				break
			}
			if c.Tag == 0 {
				depth--
				continue
			}
			visit(c)
			if c.Children {
				depth++
			}
		}
	}
	for _, o := range follow {
		di.typesOf(o, seen, out)
	}
}

// aggregate is a struct, union or class reached from the patch's code, with
// the name it is known by and the compile unit it was seen in.
type aggregate struct {
	key  string // "struct conn", or "typedef conn_t" for an anonymous one
	name string // for messages
	cu   string
	t    *dwarf.StructType
}

// aggregates walks types (through pointers, typedefs, qualifiers, arrays,
// members and function types) and returns every complete struct, union and
// class reached.
func (di *debugInfo) aggregates(roots map[dwarf.Offset]bool) []aggregate {
	seen := map[dwarf.Type]bool{}
	var out []aggregate
	var walk func(t dwarf.Type, cu, typedef string)
	walk = func(t dwarf.Type, cu, typedef string) {
		if t == nil || seen[t] {
			return
		}
		seen[t] = true
		switch t := t.(type) {
		case *dwarf.StructType:
			if !t.Incomplete {
				switch {
				case t.StructName != "":
					out = append(out, aggregate{key: t.StructName, name: t.Kind + " " + t.StructName, cu: cu, t: t})
				case typedef != "":
					out = append(out, aggregate{key: "typedef " + typedef, name: typedef + " (" + t.Kind + ")", cu: cu, t: t})
				}
			}
			for _, f := range t.Field {
				walk(f.Type, cu, "")
			}
		case *dwarf.TypedefType:
			walk(t.Type, cu, t.Name)
		case *dwarf.PtrType:
			walk(t.Type, cu, "")
		case *dwarf.QualType:
			walk(t.Type, cu, typedef)
		case *dwarf.ArrayType:
			walk(t.Type, cu, "")
		case *dwarf.FuncType:
			walk(t.ReturnType, cu, "")
			for _, p := range t.ParamType {
				walk(p, cu, "")
			}
		}
	}
	offs := make([]dwarf.Offset, 0, len(roots))
	for o := range roots {
		offs = append(offs, o)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	for _, o := range offs {
		t, err := di.d.Type(o)
		if err != nil {
			continue
		}
		walk(t, di.cuOf(o), "")
	}
	return out
}

// memberKey names a member for pairing: its name, or its position among the
// unnamed members (anonymous unions and bit-field padding).
func memberKeys(t *dwarf.StructType) []string {
	keys := make([]string, len(t.Field))
	unnamed := 0
	for i, f := range t.Field {
		if f.Name != "" {
			keys[i] = f.Name
		} else {
			keys[i] = fmt.Sprintf("#%d", unnamed)
			unnamed++
		}
	}
	return keys
}

func memberName(key string) string {
	if strings.HasPrefix(key, "#") {
		return "(unnamed member " + key + ")"
	}
	return fmt.Sprintf("%q", key)
}

func bitOffset(f *dwarf.StructField) int64 {
	if f.DataBitOffset != 0 {
		return f.DataBitOffset
	}
	return f.ByteOffset*8 + f.BitOffset
}

// typeName names a member's type for comparison: its C spelling, except
// that an enum is named without its values (a new enumerator changes no
// layout).
func typeName(t dwarf.Type) string {
	switch t := t.(type) {
	case nil:
		return "void"
	case *dwarf.EnumType:
		if t.EnumName != "" {
			return "enum " + t.EnumName
		}
		return fmt.Sprintf("enum (%d bytes)", t.ByteSize)
	case *dwarf.QualType:
		return t.Qual + " " + typeName(t.Type)
	case *dwarf.ArrayType:
		return fmt.Sprintf("[%d]%s", t.Count, typeName(t.Type))
	}
	return t.String()
}

func typeSize(t dwarf.Type) int64 {
	if t == nil {
		return 0
	}
	return t.Size()
}

// layoutDiff describes the first difference between the layouts of an
// original and a fixed aggregate, "" when they are the same.
func layoutDiff(o, f *dwarf.StructType) (member, change string) {
	ok, fk := memberKeys(o), memberKeys(f)
	fIdx := map[string]int{}
	for i, k := range fk {
		fIdx[k] = i
	}
	oIdx := map[string]int{}
	for i, k := range ok {
		oIdx[k] = i
	}
	for i, om := range o.Field {
		j, found := fIdx[ok[i]]
		if !found {
			for k, fm := range f.Field {
				if _, old := oIdx[fk[k]]; !old && fm.ByteOffset == om.ByteOffset {
					return ok[i], fmt.Sprintf("member %s (%s) at offset %d was replaced by %s (%s)", memberName(ok[i]), om.Type, om.ByteOffset, memberName(fk[k]), fm.Type)
				}
			}
			return ok[i], fmt.Sprintf("member %s (%s) at offset %d was removed", memberName(ok[i]), om.Type, om.ByteOffset)
		}
		fm := f.Field[j]
		if fm.ByteOffset != om.ByteOffset {
			return ok[i], fmt.Sprintf("member %s moved from offset %d to %d", memberName(ok[i]), om.ByteOffset, fm.ByteOffset)
		}
		if bitOffset(fm) != bitOffset(om) || fm.BitSize != om.BitSize {
			return ok[i], fmt.Sprintf("bit-field %s moved or changed width", memberName(ok[i]))
		}
		if typeName(fm.Type) != typeName(om.Type) || typeSize(fm.Type) != typeSize(om.Type) {
			return ok[i], fmt.Sprintf("member %s changed type from %s (%d bytes) to %s (%d bytes)", memberName(ok[i]), typeName(om.Type), typeSize(om.Type), typeName(fm.Type), typeSize(fm.Type))
		}
	}
	for k, fm := range f.Field {
		if _, old := oIdx[fk[k]]; !old {
			return fk[k], fmt.Sprintf("member %s (%s) was added at offset %d", memberName(fk[k]), fm.Type, fm.ByteOffset)
		}
	}
	if o.ByteSize != f.ByteSize {
		return "", fmt.Sprintf("its size changed from %d to %d bytes", o.ByteSize, f.ByteSize)
	}
	if o.Kind != f.Kind {
		return "", fmt.Sprintf("it changed from a %s to a %s", o.Kind, f.Kind)
	}
	return "", ""
}

// origAggregate returns the original's definitions of an aggregate key,
// those of the same compile unit first.
func (di *debugInfo) origAggregates(key, cu string) []*dwarf.StructType {
	var same, other []*dwarf.StructType
	for _, off := range di.types[key] {
		t, err := di.d.Type(off)
		if err != nil {
			continue
		}
		if td, ok := t.(*dwarf.TypedefType); ok {
			t = td.Type
			for {
				q, ok := t.(*dwarf.QualType)
				if !ok {
					break
				}
				t = q.Type
			}
		}
		st, ok := t.(*dwarf.StructType)
		if !ok || st.Incomplete {
			continue
		}
		if strings.HasPrefix(key, "typedef ") && st.StructName != "" {
			continue
		}
		if di.cuOf(off) == cu {
			same = append(same, st)
		} else {
			other = append(other, st)
		}
	}
	return append(same, other...)
}

// checkLayouts compares, with the DWARF of both builds, the layout of every
// struct, union and class that the patch's functions use (through their
// parameters, locals, return types and the globals they refer to, and
// everything those types contain or point to) with its definition in the
// original. A type the original defines is in use there (gcc emits only the
// types a unit uses), so objects of it may exist in the process: a changed
// layout is refused. A type the original lacks is new and free to have any
// layout. It reports whether the check covered the patch: false when either
// build lacks DWARF or a function of the patch has none.
func (b *builder) checkLayouts() (bool, error) {
	fdi, err := loadDebugInfo(b.fixed.path)
	if err != nil {
		debugf("DWARF of %s cannot be read, type layouts not checked: %v", b.fixed.path, err)
		return false, nil
	}
	odi, err := loadDebugInfo(b.orig.path)
	if err != nil {
		debugf("DWARF of %s cannot be read, type layouts not checked: %v", b.orig.path, err)
		return false, nil
	}
	if fdi == nil || odi == nil {
		return false, nil
	}
	var funcs []*symbol
	for f := range b.changed {
		funcs = append(funcs, f)
	}
	for f := range b.added {
		funcs = append(funcs, f)
	}
	sort.Slice(funcs, func(i, j int) bool { return funcs[i].addr < funcs[j].addr })

	covered := true
	for _, fn := range funcs {
		fields, _ := b.codeFields(b.fixed, fn)
		roots, ok := b.fixed.layoutRoots(fdi, fn, fields)
		if !ok {
			covered = false
		}
		if err := sameLayouts(fdi, odi, roots, fn.display()); err != nil {
			return false, err
		}
	}
	return covered, nil
}

// layoutRoots returns the types a function of m uses: through its
// parameters, locals and return type (its DWARF subprogram) and the
// globals and statics its fields refer to. ok is false when the function
// has no DWARF (assembly, a unit built without -g).
func (m *module) layoutRoots(di *debugInfo, fn *symbol, fields []field) (roots map[dwarf.Offset]bool, ok bool) {
	roots = map[dwarf.Offset]bool{}
	seen := map[dwarf.Offset]bool{}
	if off, found := di.subprogramAt(fn.addr); found {
		di.typesOf(off, seen, roots)
		ok = true
	} else {
		debugf("%s: no DWARF subprogram; its types are not checked", fn.display())
	}
	for _, fl := range fields {
		if fl.keep || fl.ext {
			continue
		}
		r, err := m.refOf(fl, fn.display())
		if err != nil {
			continue
		}
		if r.kind == refIndirect && r.inner != nil {
			r = *r.inner
		}
		if (r.kind == refObj || r.kind == refRO) && r.sym != nil {
			if v, found := di.vars[r.sym.addr]; found {
				di.typesOf(v, seen, roots)
			}
		}
	}
	return roots, ok
}

// sameLayouts compares every aggregate under roots (of the build ndi) with
// its definitions in odi: one of them must have the same layout. A type
// odi lacks is new there and free to have any layout.
func sameLayouts(ndi, odi *debugInfo, roots map[dwarf.Offset]bool, fn string) error {
	for _, a := range ndi.aggregates(roots) {
		olds := odi.origAggregates(a.key, a.cu)
		if len(olds) == 0 {
			continue // a new type: no object of it exists yet
		}
		var member, change string
		for i, o := range olds {
			m, c := layoutDiff(o, a.t)
			if c == "" {
				change = ""
				break
			}
			if i == 0 {
				member, change = m, c
			}
		}
		if change != "" {
			return &LayoutError{Type: a.name, Member: member, Change: change, Function: fn}
		}
	}
	return nil
}
