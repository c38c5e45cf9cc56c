package builder

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"sort"

	"github.com/hotpatch/hotpatch/patch"
)

// refKind says what kind of place a relocated field refers to.
type refKind uint8

const (
	refKeep     refKind = iota + 1 // a link-time constant kept as it is
	refFunc                        // a function (sym), at offset off
	refObj                         // a writable data object (sym), at offset off
	refRO                          // read-only data chunk [start, end), at offset off
	refExt                         // an external symbol (name, version)
	refGOT                         // a GOT slot filled by a dynamic relocation
	refIndirect                    // a statically filled GOT slot holding the address of inner
	refLabel                       // a symbol outside every section (__TMC_END__), at offset off
	refAnon                        // unnamed writable data chunk [start, end) in section sec, at offset off
)

// ref is the meaning of a relocated field, independent of layout.
type ref struct {
	kind       refKind
	sym        *symbol
	off        int64
	start, end uint64   // refRO, refAnon
	sec        *section // refAnon
	name, ver  string   // refExt
	indirect   bool     // refExt: via a GOT slot
	dyn        *dynReloc
	inner      *ref
}

// refOf classifies the target of a field of module m.
func (m *module) refOf(f field, from string) (ref, error) {
	if f.keep {
		return ref{kind: refKeep}, nil
	}
	if f.ext {
		s := f.r.sym
		sec := m.sectionAt(f.target)
		return ref{kind: refExt, name: s.base, ver: s.version, off: extOffset(f), indirect: f.typ == patch.PC32 && sec != nil && sec.kind == secGOT}, nil
	}
	return m.refAtField(f.target, f.r.sym, f.indexed, from)
}

// extOffset is the offset from the external symbol an absolute field adds.
func extOffset(f field) int64 {
	if f.typ == patch.PC32 { //: addend is already relative to the field
		return 0
	}
	return f.r.addend
}

func (m *module) refAt(t uint64, sym *symbol, from string) (ref, error) {
	return m.refAtField(t, sym, false, from)
}

// offsetBase returns the object that an indexed operand refers to when its
// displacement, expressed against the section symbol, lies in no object:
// gcc writes a[i-1] as a-8(,%rdx,8), which points before a (into padding,
// or before the start of the section). The object is the first one of the
// section at or after the displacement, at most 64 bytes on.
func (m *module) offsetBase(t uint64, sym *symbol) *symbol {
	if sym == nil || sym.typ != elf.STT_SECTION || sym.sec == nil {
		return nil
	}
	sec := sym.sec
	if sec.kind != secData && sec.kind != secBSS && sec.kind != secROData {
		return nil
	}
	if s := m.sectionAt(t); s == sec && m.objectIn(t) != nil {
		return nil
	}
	if rs := m.relocsIn(t, 1); len(rs) > 0 && rs[0].off == t {
		// A relocated field starts there: an unnamed table (a non-PIC
		// jump table, jmp *.L4(,%rdi,8)), not padding before an object.
		return nil
	}
	i := sort.Search(len(m.objects), func(i int) bool { return m.objects[i].addr >= t })
	for ; i < len(m.objects); i++ {
		o := m.objects[i]
		if o.addr-t > 64 {
			return nil
		}
		if o.sec == sec {
			return o
		}
	}
	return nil
}

func (m *module) refAtField(t uint64, sym *symbol, indexed bool, from string) (ref, error) {
	if indexed {
		if o := m.offsetBase(t, sym); o != nil {
			if o.sec.kind == secROData {
				return ref{kind: refRO, sym: o, start: o.addr, end: o.addr + o.size, off: int64(t - o.addr)}, nil
			}
			return m.objRef(o, t)
		}
	}
	sec := m.sectionAt(t)
	if sec == nil {
		// One past the end of the last object of a section.
		if o := m.objectAt(t); o != nil {
			return m.objRef(o, t)
		}
		if sym != nil && sym.defined() {
			return ref{kind: refLabel, sym: sym, off: int64(t - sym.addr)}, nil
		}
		return ref{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf("reference to %#x, outside every section", t)}
	}
	if sym != nil && sym.typ == elf.STT_SECTION && m.emptySecs[sym.name] {
		return ref{kind: refLabel, sym: sym, off: int64(t - sym.addr)}, nil
	}
	if sym != nil && sym.defined() && sym.typ != elf.STT_SECTION && sym.name != "" && sec.kind != secGOT && sec.kind != secPLT {
		// The compiler named what it referred to: anchor on that symbol,
		// so a pointer one past an object is not taken for the next one.
		switch {
		case sym.typ == elf.STT_FUNC:
			if fn := m.funcAt(sym.addr); fn != nil && t >= fn.addr {
				return ref{kind: refFunc, sym: fn, off: int64(t - fn.addr)}, nil
			}
		case sym.size == 0 && t == sym.addr && sec.kind != secROData && sec.kind != secCode:
			return ref{kind: refLabel, sym: sym, off: 0}, nil
		case sym.size > 0 && sym.typ == elf.STT_OBJECT && sym.sec != nil && (t >= sym.addr && t <= sym.addr+sym.size || indexed):
			// An indexed operand may point outside the object it indexes
			// (a-8(,%rdx,8)): the symbol still says which object it is.
			if o := m.byKey[sym.key]; o == sym {
				if sym.sec.kind == secROData {
					return ref{kind: refRO, sym: o, start: o.addr, end: o.addr + o.size, off: int64(t - o.addr)}, nil
				}
				if sym.sec.kind == secData || sym.sec.kind == secBSS {
					return m.objRef(o, t)
				}
			}
		}
	}
	switch sec.kind {
	case secCode:
		fn := m.funcAt(t)
		if fn == nil {
			return ref{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf("reference to code at %#x outside any function symbol", t)}
		}
		return ref{kind: refFunc, sym: fn, off: int64(t - fn.addr)}, nil
	case secPLT:
		if sym != nil && sym.defined() && sym.typ == elf.STT_FUNC {
			if fn := m.funcAt(sym.addr); fn != nil {
				return ref{kind: refFunc, sym: fn, off: int64(sym.addr - fn.addr)}, nil
			}
		}
		return ref{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf("call through the PLT at %#x to an unknown symbol", t)}
	case secGOT:
		if d := m.dyn[t]; d != nil {
			return ref{kind: refGOT, dyn: d}, nil
		}
		v, ok := m.bytesAt(t, 8)
		if !ok {
			return ref{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf("GOT slot %#x cannot be read", t)}
		}
		inner, err := m.refAt(binary.LittleEndian.Uint64(v), nil, from)
		if err != nil {
			return ref{}, err
		}
		return ref{kind: refIndirect, inner: &inner}, nil
	case secROData:
		if o := m.objectIn(t); o != nil && o.sec != nil && o.sec.kind == secROData {
			return ref{kind: refRO, sym: o, start: o.addr, end: o.addr + o.size, off: int64(t - o.addr)}, nil
		}
		start, end := m.extent(t)
		return ref{kind: refRO, start: start, end: end, off: int64(t - start)}, nil
	case secData, secBSS:
		o := m.objectAt(t)
		if o == nil && sym != nil && sym.defined() && sym.typ != elf.STT_SECTION && sym.name != "" {
			// A label without a size, like __dso_handle.
			return ref{kind: refLabel, sym: sym, off: int64(t - sym.addr)}, nil
		}
		if o == nil {
			// Unnamed writable data: under PIE, gcc keeps the initialiser
			// template of a local array that holds pointers in .data.
			start, end := m.plainExtent(t)
			return ref{kind: refAnon, sec: sec, start: start, end: end}, nil
		}
		return m.objRef(o, t)
	case secTLS:
		return ref{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf("direct reference to thread-local data at %#x", t)}
	}
	return ref{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf("reference into %s at %#x", sec.name, t)}
}

func (m *module) objRef(o *symbol, t uint64) (ref, error) {
	if d := m.dyn[o.addr]; d != nil && d.typ == elf.R_X86_64_COPY {
		// A copy of a library's object (stdout, stderr, environ).
		return ref{kind: refExt, name: o.base, ver: o.version, off: int64(t - o.addr)}, nil
	}
	return ref{kind: refObj, sym: o, off: int64(t - o.addr)}, nil
}

// equivalent reports whether field fo of the original and ff of the fixed
// build mean the same thing.
func (b *builder) equivalent(ro, rf ref) (bool, error) {
	if ro.kind != rf.kind {
		return false, nil
	}
	switch rf.kind {
	case refKeep:
		return true, nil
	case refFunc:
		return b.corr[rf.sym] == ro.sym && ro.off == rf.off, nil
	case refObj:
		return b.corr[rf.sym] == ro.sym && ro.off == rf.off, nil
	case refExt:
		return ro.name == rf.name && ro.ver == rf.ver && ro.off == rf.off && ro.indirect == rf.indirect, nil
	case refGOT:
		d, e := ro.dyn, rf.dyn
		if d.typ != e.typ || d.sym != e.sym {
			return false, nil
		}
		if d.typ == elf.R_X86_64_RELATIVE {
			io, err := b.orig.refAt(uint64(d.addend), nil, "GOT")
			if err != nil {
				return false, err
			}
			iff, err := b.fixed.refAt(uint64(e.addend), nil, "GOT")
			if err != nil {
				return false, err
			}
			return b.equivalent(io, iff)
		}
		return d.addend == e.addend, nil
	case refIndirect:
		return b.equivalent(*ro.inner, *rf.inner)
	case refLabel:
		return ro.sym.key == rf.sym.key && ro.off == rf.off, nil
	case refRO:
		return b.sameROData(ro, rf)
	case refAnon:
		if ro.off != rf.off || ro.sec.name != rf.sec.name {
			return false, nil
		}
		same, err := b.sameChunk(ro.start, ro.end, rf.start, rf.end, "unnamed data")
		if same && err == nil {
			b.notePair(ro.start, rf.start)
		}
		return same, err
	}
	return false, nil
}

// sameROData compares two read-only chunks by contents and by what their
// relocated fields refer to. Names do not matter: read-only data with the
// same contents is interchangeable (aliases X.1, X.2 at one address compare
// once, by contents).
func (b *builder) sameROData(ro, rf ref) (bool, error) {
	if ro.off != rf.off {
		return false, nil
	}
	if ro.sym == nil || rf.sym == nil {
		bo, _ := b.orig.bytesAt(ro.start, ro.end-ro.start)
		bf, _ := b.fixed.bytesAt(rf.start, rf.end-rf.start)
		if looksLikeString(bo) && looksLikeString(bf) && ro.off >= 0 && ro.off < int64(len(bo)) && rf.off < int64(len(bf)) &&
			len(b.orig.relocsIn(ro.start, ro.end-ro.start)) == 0 && len(b.fixed.relocsIn(rf.start, rf.end-rf.start)) == 0 {
			// String literals: what the code reads is the C string at the target.
			return bytes.Equal(cstring(bo[ro.off:]), cstring(bf[rf.off:])), nil
		}
	}
	if ro.sym == nil && rf.sym == nil && ro.end-ro.start != rf.end-rf.start {
		return b.sameTables(ro, rf) // see jumptable.go
	}
	return b.sameChunk(ro.start, ro.end, rf.start, rf.end, "read-only data")
}

// chunkPair names a comparison of an original chunk with a fixed one.
type chunkPair struct{ os, oe, fs, fe uint64 }

// sameChunk compares two data chunks, bytes and relocated fields. Data may
// refer to itself (a self-pointing array, a cyclic list of descriptors):
// the comparison is a bisimulation. A pair under comparison counts as
// equal; a pair found different stays different; pairs found equal are kept
// only once the outermost comparison has succeeded, since they may rest on
// an assumption it disproved. No depth limit turns "same" into "different".
func (b *builder) sameChunk(os, oe, fs, fe uint64, what string) (bool, error) {
	if oe-os != fe-fs {
		return false, nil
	}
	k := chunkPair{os, oe, fs, fe}
	if v, ok := b.chunkMemo[k]; ok {
		return v, nil
	}
	if b.chunkBusy[k] {
		return true, nil
	}
	if b.chunkBusy == nil {
		b.chunkBusy = map[chunkPair]bool{}
	}
	if b.chunkMemo == nil {
		b.chunkMemo = map[chunkPair]bool{}
	}
	outer := len(b.chunkBusy) == 0
	b.chunkBusy[k] = true
	same, err := b.compareChunk(os, oe, fs, fe, what)
	delete(b.chunkBusy, k)
	switch {
	case err != nil:
	case !same:
		b.chunkMemo[k] = false
		if outer {
			b.chunkTrue = b.chunkTrue[:0]
		}
	case outer:
		for _, t := range b.chunkTrue {
			b.chunkMemo[t] = true
		}
		b.chunkTrue = b.chunkTrue[:0]
		b.chunkMemo[k] = true
	default:
		b.chunkTrue = append(b.chunkTrue, k)
	}
	return same, err
}

func (b *builder) compareChunk(os, oe, fs, fe uint64, what string) (bool, error) {
	so, sf := b.orig.sectionAt(os), b.fixed.sectionAt(fs)
	if so == nil || sf == nil || so.kind != sf.kind {
		return false, nil
	}
	bo, okO := b.orig.bytesAt(os, oe-os)
	bf, okF := b.fixed.bytesAt(fs, fe-fs)
	if okO != okF {
		return false, nil
	}
	if !okO {
		// NOBITS (.bss): all zero; only the size and relocations count.
		bo, bf = make([]byte, oe-os), make([]byte, fe-fs)
	}
	fo, err := b.orig.dataFields(os, oe, what)
	if err != nil {
		return false, err
	}
	ff, err := b.fixed.dataFields(fs, fe, what)
	if err != nil {
		return false, err
	}
	return b.sameFields(bo, bf, fo, ff, what)
}

func cstring(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i+1]
	}
	return b
}

// sameFields compares two byte ranges with their relocated fields: the bytes
// outside the fields must be equal and each pair of fields equivalent.
func (b *builder) sameFields(bo, bf []byte, fo, ff []field, what string) (bool, error) {
	if len(bo) != len(bf) || len(fo) != len(ff) {
		return false, nil
	}
	mo := bytes.Clone(bo)
	mf := bytes.Clone(bf)
	for i := range ff {
		if fo[i].off != ff[i].off || fo[i].typ != ff[i].typ || fo[i].keep != ff[i].keep || fo[i].ext != ff[i].ext {
			return false, nil
		}
		if !ff[i].keep {
			n := uint64(ff[i].typ.Size())
			if ff[i].off+n > uint64(len(mf)) {
				// A field that runs past the end of the range: compare
				// what lies inside as plain bytes.
				n = uint64(len(mf)) - ff[i].off
			}
			clear(mo[fo[i].off : fo[i].off+n])
			clear(mf[ff[i].off : ff[i].off+n])
		}
	}
	if !bytes.Equal(mo, mf) {
		debugf("%s: the code differs outside its relocated fields (a changed instruction)", what)
		return false, nil
	}
	for i := range ff {
		ro, err := b.orig.refOf(fo[i], what)
		if err != nil {
			return false, err
		}
		rf, err := b.fixed.refOf(ff[i], what)
		if err != nil {
			return false, err
		}
		if ok, err := b.equivalent(ro, rf); err != nil || !ok {
			if err != nil {
				debugf("%s: the field at offset %#x: %v", what, ff[i].off, err)
			} else {
				debugf("%s: the field at offset %#x refers to %v in the original and to %v in the fixed build", what, ff[i].off, ro, rf)
			}
			return false, err
		}
	}
	return true, nil
}

var debug = os.Getenv("HOTPATCH_BUILD_DEBUG") != ""

// String says what a reference points at, for HOTPATCH_BUILD_DEBUG.
func (r ref) String() string {
	at := func(s string, off int64) string {
		if off != 0 {
			return fmt.Sprintf("%s%+#x", s, off)
		}
		return s
	}
	name := func() string {
		if r.sym == nil {
			return "?"
		}
		return r.sym.display()
	}
	switch r.kind {
	case refKeep:
		return "a link-time constant"
	case refFunc:
		return "function " + at(name(), r.off)
	case refObj:
		return "data object " + at(name(), r.off)
	case refRO:
		return at(fmt.Sprintf("read-only data [%#x, %#x)", r.start, r.end), r.off)
	case refExt:
		s := "external symbol " + r.name
		if r.ver != "" {
			s += "@" + r.ver
		}
		if r.indirect {
			s += " (through the GOT)"
		}
		return at(s, r.off)
	case refGOT:
		return "a GOT slot filled at load time"
	case refIndirect:
		if r.inner != nil {
			return "a GOT slot holding the address of " + r.inner.String()
		}
		return "a GOT slot"
	case refLabel:
		return "label " + at(name(), r.off)
	}
	return "an unknown reference"
}

func debugf(format string, args ...any) {
	if debug {
		fmt.Fprintf(os.Stderr, "build: "+format+"\n", args...)
	}
}
