//go:build linux && amd64

package engine

import (
	"debug/elf"
	"fmt"
	"os"
)

// symbolTable is the exported (dynamic) symbols of one mapped module.
type symbolTable struct {
	mod  Module
	syms map[string][]elf.Symbol
}

// resolver finds symbols of other modules in a process, in the order the
// dynamic linker searches them: the executable first, then the libraries
// in the order they were mapped.
type resolver struct {
	pid    int
	tables []*symbolTable
}

func newResolver(pid int, mods []Module, maps []Mapping) *resolver {
	r := &resolver{pid: pid}
	for _, m := range mods {
		byName := cached(modCache.syms, m, func() (map[string][]elf.Symbol, bool) {
			var syms []elf.Symbol
			var err error
			if !withModuleELF(pid, m, maps, func(ef *elf.File) { syms, err = ef.DynamicSymbols() }) || err != nil {
				return nil, false
			}
			out := map[string][]elf.Symbol{}
			for _, s := range syms {
				if s.Section == elf.SHN_UNDEF || elf.ST_BIND(s.Info) == elf.STB_LOCAL {
					continue
				}
				out[s.Name] = append(out[s.Name], s)
			}
			return out, true
		})
		if byName == nil {
			continue
		}
		r.tables = append(r.tables, &symbolTable{mod: m, syms: byName})
	}
	return r
}

// withModuleELF opens the ELF file a module was mapped from and calls fn
// with it; it reports false when the file cannot be read as ELF.
func withModuleELF(pid int, m Module, maps []Mapping, fn func(*elf.File)) bool {
	f, err := os.Open(mapFilePath(pid, m, maps))
	if err != nil {
		return false
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return false
	}
	fn(ef)
	return true
}

// mapFilePath names the file a module was mapped from, through
// /proc/PID/map_files so that a file replaced on disk still reads as mapped.
func mapFilePath(pid int, m Module, maps []Mapping) string {
	for _, mp := range maps {
		if mp.Start == m.Start && mp.Offset == 0 {
			return fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, mp.Start, mp.End)
		}
	}
	return m.Path
}

// lookup returns the run-time address of a symbol, and whether it is an
// IFUNC whose resolver must be called to get the implementation.
func (r *resolver) lookup(name, version string, skip Module) (addr uint64, ifunc bool, err error) {
	for _, t := range r.tables {
		if t.mod.Start == skip.Start {
			continue
		}
		cands := t.syms[name]
		var best *elf.Symbol
		for i := range cands {
			s := &cands[i]
			if version != "" && s.Version == version {
				best = s
				break
			}
			if best == nil && !(s.HasVersion && s.VersionIndex.IsHidden()) {
				best = s // the default version
			}
		}
		if best == nil {
			continue
		}
		return t.mod.Bias + best.Value, elf.ST_TYPE(best.Info) == elf.STT_GNU_IFUNC, nil
	}
	return 0, false, &SymbolError{Symbol: name, Version: version}
}
