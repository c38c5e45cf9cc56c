package builder

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	"github.com/hotpatch/hotpatch/patch"
)

// roundTrip checks a built patch against the fixed build it came from: it
// "applies" the patch as if its code sat where the fixed build has it and
// the original module's objects sat where the fixed build has their
// counterparts, and requires every relocated field to come out with exactly
// the bytes of the fixed build. A wrong target, addend or type, or a field
// without a relocation, makes it fail.
func roundTrip(orig, fixed string, p *patch.Patch) error {
	o, err := openModule(orig)
	if err != nil {
		return err
	}
	f, err := openModule(fixed)
	if err != nil {
		return err
	}
	b := &builder{orig: o, fixed: f, corr: map[*symbol]*symbol{}, fields: map[*symbol][]field{}, loose: map[*symbol]error{}}
	if err := b.pair(); err != nil {
		return err
	}
	inv := map[*symbol]*symbol{}
	for fs, os := range b.corr {
		inv[os] = fs
	}

	// Where each part of the patch sits in the fixed build.
	textAt := func(off uint64) (uint64, error) {
		for _, fn := range p.Functions {
			if fn.NewSize > 0 && off >= fn.NewOffset && off <= fn.NewOffset+fn.NewSize {
				s := f.findFunc(fn.Name, fn.File)
				if s == nil {
					return 0, fmt.Errorf("function %s not in the fixed build", fn.Name)
				}
				return s.addr + off - fn.NewOffset, nil
			}
		}
		return 0, fmt.Errorf("text offset %#x is in no function", off)
	}
	// ROData and Data: find the chunk by matching contents, recorded by
	// rebuilding the patch (deterministic) with the same builder state.
	b2 := &builder{orig: o, fixed: f, corr: b.corr, fields: map[*symbol][]field{}, loose: map[*symbol]error{}}
	if err := b2.diff(); err != nil {
		return err
	}
	if _, err := b2.emit(); err != nil {
		return err
	}
	sectionAt := func(sec patch.Section, off uint64) (uint64, error) {
		switch sec {
		case patch.Text:
			return textAt(off)
		case patch.ROData:
			// A field may point one past the end of a chunk, where the
			// next one starts: prefer the chunk that holds the offset.
			var best uint64
			found, strict := false, false
			for start, o := range b2.roOff {
				for _, ob := range p.Objects {
					if ob.Section != patch.ROData || ob.Offset != o || off < o || off > o+ob.Size {
						continue
					}
					inside := off < o+ob.Size
					if !found || (inside && !strict) {
						best, found, strict = start+off-o, true, inside
					}
				}
			}
			if found {
				return best, nil
			}
		case patch.Data, patch.BSS:
			for start, c := range b2.anonOff {
				if c.sec == sec && off >= c.off {
					for _, ob := range p.Objects {
						if ob.Section == sec && ob.Offset == c.off && off <= c.off+ob.Size {
							return start + off - c.off, nil
						}
					}
				}
			}
			for s, o := range b2.dataOff {
				if off >= o && off <= o+s.size && (s.sec.kind == secBSS) == (sec == patch.BSS) {
					return s.addr + off - o, nil
				}
			}
		}
		return 0, fmt.Errorf("%v offset %#x is in no carried object", sec, off)
	}
	moduleAt := func(a uint64) (uint64, error) {
		if s := o.funcAt(a); s != nil && inv[s] != nil {
			return inv[s].addr + a - s.addr, nil
		}
		if s := o.objectAt(a); s != nil && inv[s] != nil {
			return inv[s].addr + a - s.addr, nil
		}
		for fs, ob := range b2.anonBound {
			if a >= ob[0] && a <= ob[0]+ob[1] {
				return fs + a - ob[0], nil
			}
		}
		if d := o.dyn[a]; d != nil {
			for _, e := range f.dynSorted() {
				if e.typ == d.typ && e.sym == d.sym && (d.typ != elf.R_X86_64_RELATIVE || b.sameRelative(d, e)) {
					if s := f.sectionAt(e.off); s != nil && s.kind == secGOT {
						return e.off, nil
					}
				}
			}
		}
		for _, s := range o.syms[1:] {
			if s != nil && s.addr == a && s.defined() {
				if t := f.findKey(s.key); t != nil {
					return t.addr, nil
				}
			}
		}
		return 0, fmt.Errorf("module address %#x has no counterpart in the fixed build", a)
	}
	external := func(t patch.RelocTarget, fieldAddr uint64) (uint64, bool) {
		// The fixed build reached externals through its PLT, GOT or a copy;
		// take the address its own bytes refer to for the same symbol.
		if c := f.copyOf(t.Symbol, t.Version); c != nil && !t.Indirect {
			return c.addr, true
		}
		return 0, false
	}

	for _, r := range p.Relocs {
		P, err := sectionAt(r.Section, r.Offset)
		if err != nil {
			return fmt.Errorf("reloc at %v+%#x: %w", r.Section, r.Offset, err)
		}
		var T uint64
		switch r.Target.Kind {
		case patch.InPatch:
			T, err = sectionAt(r.Target.Section, r.Target.Offset)
		case patch.InModule:
			T, err = moduleAt(r.Target.Addr)
		case patch.External:
			var ok bool
			if T, ok = external(r.Target, P); !ok {
				continue // resolved in the process at apply time
			}
		}
		if err != nil {
			return fmt.Errorf("reloc at %v+%#x: %w", r.Section, r.Offset, err)
		}
		if r.Target.Indirect && r.Target.Kind != patch.InModule {
			continue // the slot is made at apply time
		}
		want, ok := f.bytesAt(P, uint64(r.Type.Size()))
		if !ok {
			if s := f.sectionAt(P); s != nil && s.kind == secBSS {
				continue
			}
			return fmt.Errorf("reloc at %v+%#x: fixed address %#x unreadable", r.Section, r.Offset, P)
		}
		var got []byte
		v := int64(T) + r.Addend
		switch r.Type {
		case patch.PC32:
			got = binary.LittleEndian.AppendUint32(nil, uint32(int32(v-int64(P))))
		case patch.Abs64:
			got = binary.LittleEndian.AppendUint64(nil, uint64(v))
		case patch.Abs32, patch.Abs32S:
			got = binary.LittleEndian.AppendUint32(nil, uint32(v))
		}
		if string(got) != string(want) && r.Type == patch.PC32 {
			// The fixed build calls the module's own exported function
			// through its PLT; the patch calls it directly, by design.
			fixedT := uint64(int64(P) + int64(int32(binary.LittleEndian.Uint32(want))) - r.Addend)
			if s := f.sectionAt(fixedT); s != nil && s.kind == secPLT {
				if fn := f.funcAt(T); fn != nil && fn.addr == T && fn.bind != elf.STB_LOCAL {
					continue
				}
			}
		}
		if string(got) != string(want) {
			// Position-independent data is filled by the dynamic linker;
			// the file may hold zero there.
			if r.Type == patch.Abs64 && binary.LittleEndian.Uint64(want) == 0 && f.dyn[P] != nil {
				continue
			}
			return fmt.Errorf("reloc at %v+%#x (fixed %#x, %v to %+v%+d): computes % x, fixed build has % x",
				r.Section, r.Offset, P, r.Type, r.Target, r.Addend, got, want)
		}
	}
	return nil
}

func (m *module) findFunc(name, file string) *symbol {
	for _, s := range m.funcs {
		if s.name == name && s.file == file {
			return s
		}
	}
	return nil
}

func (m *module) findKey(key string) *symbol {
	for _, s := range m.syms[1:] {
		if s != nil && s.key == key && s.defined() {
			return s
		}
	}
	return nil
}
