package builder

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"

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
)

// ref is the meaning of a relocated field, independent of layout.
type ref struct {
	kind       refKind
	sym        *symbol
	off        int64
	start, end uint64 // refRO
	name, ver  string // refExt
	indirect   bool   // refExt: via a GOT slot
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
	return m.refAt(f.target, f.r.sym, from)
}

// extOffset is the offset from the external symbol an absolute field adds.
func extOffset(f field) int64 {
	if f.typ == patch.PC32 { //: addend is already relative to the field
		return 0
	}
	return f.r.addend
}

func (m *module) refAt(t uint64, sym *symbol, from string) (ref, error) {
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
		case sym.size > 0 && t >= sym.addr && t <= sym.addr+sym.size && (sym.typ == elf.STT_OBJECT):
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
			return ref{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf("reference to unnamed writable data at %#x in %s", t, sec.name)}
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
// build mean the same thing. depth bounds the recursion through data.
func (b *builder) equivalent(ro, rf ref, depth int) (bool, error) {
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
			return b.equivalent(io, iff, depth+1)
		}
		return d.addend == e.addend, nil
	case refIndirect:
		return b.equivalent(*ro.inner, *rf.inner, depth+1)
	case refLabel:
		return ro.sym.key == rf.sym.key && ro.off == rf.off, nil
	case refRO:
		return b.sameROData(ro, rf, depth)
	}
	return false, nil
}

// sameROData compares two read-only chunks by contents and by what their
// relocated fields refer to.
func (b *builder) sameROData(ro, rf ref, depth int) (bool, error) {
	if depth > 8 {
		return false, nil
	}
	if (ro.sym == nil) != (rf.sym == nil) || ro.off != rf.off {
		return false, nil
	}
	if ro.sym != nil && b.corr[rf.sym] != ro.sym {
		return false, nil
	}
	bo, _ := b.orig.bytesAt(ro.start, ro.end-ro.start)
	bf, _ := b.fixed.bytesAt(rf.start, rf.end-rf.start)
	if ro.sym == nil && looksLikeString(bo) && looksLikeString(bf) {
		// String literals: what the code reads is the C string at the target.
		return bytes.Equal(cstring(bo[ro.off:]), cstring(bf[rf.off:])), nil
	}
	if len(bo) != len(bf) {
		return false, nil
	}
	fo, err := b.orig.dataFields(ro.start, ro.end, "read-only data")
	if err != nil {
		return false, err
	}
	ff, err := b.fixed.dataFields(rf.start, rf.end, "read-only data")
	if err != nil {
		return false, err
	}
	return b.sameFields(bo, bf, fo, ff, "read-only data", depth+1)
}

func cstring(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i+1]
	}
	return b
}

// sameFields compares two byte ranges with their relocated fields: the bytes
// outside the fields must be equal and each pair of fields equivalent.
func (b *builder) sameFields(bo, bf []byte, fo, ff []field, what string, depth int) (bool, error) {
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
		if ok, err := b.equivalent(ro, rf, depth); err != nil || !ok {
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
