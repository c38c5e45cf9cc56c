package stock

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// dynMeta are the sections the dynamic linker reads symbols and
// relocations from. Their bytes depend on the order of the dynamic symbols,
// which kept relocations can change; their meaning does not.
var dynMeta = map[string]bool{
	".dynsym": true, ".dynstr": true, ".gnu.hash": true, ".hash": true,
	".gnu.version": true, ".gnu.version_r": true, ".gnu.version_d": true,
	".rela.dyn": true, ".rela.plt": true,
}

// dynMetaAt returns the dynamic-linking table of the file that holds addr.
func (e *elfFile) dynMetaAt(addr uint64) *elf.Section {
	for _, s := range e.f.Sections {
		if dynMeta[s.Name] && s.Flags&elf.SHF_ALLOC != 0 && addr >= s.Addr && addr < s.Addr+s.Size {
			return s
		}
	}
	return nil
}

// sameDynamic compares what the dynamic linker sees in two files: the
// dynamic symbols (name, version, value, size, type, binding, visibility,
// and whether they are defined) and the dynamic relocations (place, type,
// symbol by name and version, addend), each as a set.
func sameDynamic(a, b *elfFile) error {
	sa, err := a.dynSymbols()
	if err != nil {
		return err
	}
	sb, err := b.dynSymbols()
	if err != nil {
		return err
	}
	if d := firstSetDiff(sa, sb); d != "" {
		return fmt.Errorf("the dynamic symbols differ: %s", d)
	}
	ra, err := a.dynRelocs()
	if err != nil {
		return err
	}
	rb, err := b.dynRelocs()
	if err != nil {
		return err
	}
	if d := firstSetDiff(ra, rb); d != "" {
		return fmt.Errorf("the dynamic relocations differ: %s", d)
	}
	return nil
}

// symPlace is what the dynamic linker makes of a symbol's section index:
// undefined, absolute, common, or defined in the module (the value is then
// relative to the load address; which section holds it is not used).
// Kept relocation sections renumber sections, and a linker-made symbol
// such as _edata can name the empty .tm_clone_table they keep.
func symPlace(i elf.SectionIndex) string {
	switch i {
	case elf.SHN_UNDEF:
		return "undefined"
	case elf.SHN_ABS:
		return "absolute"
	case elf.SHN_COMMON:
		return "common"
	}
	return "defined"
}

// dynSymbols lists the dynamic symbols in words, sorted, with index 0 (the
// null symbol) and their position left out.
func (e *elfFile) dynSymbols() ([]string, error) {
	syms, err := e.f.DynamicSymbols()
	if err != nil {
		return nil, fmt.Errorf("dynamic symbols: %w", err)
	}
	out := make([]string, 0, len(syms))
	for _, s := range syms {
		out = append(out, fmt.Sprintf("%s@%s %v %v vis=%d in %s value=%#x size=%d",
			s.Name, s.Version, elf.ST_TYPE(s.Info), elf.ST_BIND(s.Info), s.Other&3, symPlace(s.Section), s.Value, s.Size))
	}
	sort.Strings(out)
	return out, nil
}

// dynRelocs lists the relocations of .rela.dyn and .rela.plt in words,
// sorted, with their symbol by name and version instead of its index.
func (e *elfFile) dynRelocs() ([]string, error) {
	syms, err := e.f.DynamicSymbols()
	if err != nil {
		return nil, fmt.Errorf("dynamic symbols: %w", err)
	}
	var out []string
	for _, name := range []string{".rela.dyn", ".rela.plt"} {
		sec := e.f.Section(name)
		if sec == nil {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(data)%24 != 0 {
			return nil, fmt.Errorf("%s: %d bytes, not whole entries", name, len(data))
		}
		for off := 0; off < len(data); off += 24 {
			where := binary.LittleEndian.Uint64(data[off:])
			info := binary.LittleEndian.Uint64(data[off+8:])
			addend := int64(binary.LittleEndian.Uint64(data[off+16:]))
			sym := ""
			if i := int(info >> 32); i > 0 {
				if i > len(syms) {
					return nil, fmt.Errorf("%s: relocation at %#x names symbol %d of %d", name, where, i, len(syms))
				}
				sym = syms[i-1].Name + "@" + syms[i-1].Version
			}
			out = append(out, fmt.Sprintf("%s %#x %v %s%+d", name, where, elf.R_X86_64(info&0xffffffff), sym, addend))
		}
	}
	sort.Strings(out)
	return out, nil
}

// firstSetDiff describes the first entry in one sorted list and not the
// other, or "" when they are equal.
func firstSetDiff(a, b []string) string {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			i++
			j++
		case j >= len(b) || i < len(a) && a[i] < b[j]:
			return "installed has " + strings.TrimSpace(a[i]) + ", the rebuild does not"
		default:
			return "the rebuild has " + strings.TrimSpace(b[j]) + ", the installed file does not"
		}
	}
	return ""
}
