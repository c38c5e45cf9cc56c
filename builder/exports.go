package builder

import (
	"debug/elf"
	"fmt"
	"sort"
	"strings"

	"github.com/hotpatch/hotpatch/patch"
)

// NewExportError reports symbols that the fixed build exports and the
// original does not: an API change that a live patch cannot make, because
// it cannot add entries to the module's dynamic symbol table.
type NewExportError struct {
	Symbols []string
}

func (e *NewExportError) Error() string {
	return fmt.Sprintf("refused: the fixed build exports new symbol(s) %s (an API change): a patch cannot add them to the module's dynamic symbol table, so no other module could call them until the fixed build is loaded; build with --allow-new-exports to carry them as hidden functions", strings.Join(e.Symbols, ", "))
}

// dynamicDefs returns the names a module defines in its dynamic symbol
// table (what other modules can link to), with their types.
// Copies of other modules' objects (COPY relocations: stderr) are not the
// module's own.
func dynamicDefs(m *module) (map[string]elf.SymType, error) {
	f, err := elf.Open(m.path)
	if err != nil {
		return nil, &InputError{Path: m.path, Reason: "not an ELF file: " + err.Error()}
	}
	defer f.Close()
	out := map[string]elf.SymType{}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return out, nil // no .dynsym
	}
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF || elf.ST_BIND(s.Info) == elf.STB_LOCAL {
			continue
		}
		if d := m.dyn[s.Value]; d != nil && d.typ == elf.R_X86_64_COPY {
			continue
		}
		switch t := elf.ST_TYPE(s.Info); t {
		case elf.STT_FUNC, elf.STT_OBJECT, elf.STT_GNU_IFUNC, elf.STT_TLS:
			out[s.Name] = t
		}
	}
	return out, nil
}

// checkExports refuses a fixed build that exports symbols the original
// does not, unless allowed; when allowed, the new functions among them are
// marked FuncExported in the patch, so inspect names the API change.
func (b *builder) checkExports(p *patch.Patch, allow bool) error {
	o, err := dynamicDefs(b.orig)
	if err != nil {
		return err
	}
	f, err := dynamicDefs(b.fixed)
	if err != nil {
		return err
	}
	var added []string
	for name := range f {
		if _, ok := o[name]; !ok {
			added = append(added, name)
		}
	}
	if len(added) == 0 {
		return nil
	}
	sort.Strings(added)
	if !allow {
		return &NewExportError{Symbols: added}
	}
	for i := range p.Functions {
		fn := &p.Functions[i]
		if fn.Flags&patch.FuncNew != 0 && fn.File == "" && hasName(f, fn.Name) {
			if _, old := o[fn.Name]; !old {
				fn.Flags |= patch.FuncExported
			}
		}
	}
	return nil
}

func hasName(m map[string]elf.SymType, name string) bool {
	_, ok := m[name]
	return ok
}
