//go:build linux && amd64

package engine

import (
	"debug/elf"
	"path/filepath"
	"strings"
)

// Stacks the engine cannot see.
//
// A program that switches user-level contexts (makecontext/swapcontext
// coroutines, green threads) keeps functions suspended on stacks that no
// thread's registers lead to: the consistency check cannot see them. A
// coroutine suspended inside a function being replaced resumes in its old
// code after the apply (which may not fit the patched state), and one
// suspended inside patch code returns into it after a revert. So Apply
// refuses such a process unless Options.AllowUserContexts says the user
// knows that no replaced function can be suspended on such a stack, and
// Revert never unmaps patch code in such a process: it leaves it mapped,
// read-only and executable, in state reverted, until the process exits.

// contextSymbols are the C library's functions that switch user-level
// contexts; a module that imports one switches stacks.
var contextSymbols = []string{"swapcontext", "makecontext", "setcontext"}

// coroutineLibraries are known libraries that switch stacks without the C
// library's functions (their own assembly), by file name prefix.
var coroutineLibraries = []string{
	"libboost_context", "libboost_coroutine", "libboost_fiber", "libucontext",
	"libco.so", "libpth.so", "libdill", "libmill", "libtask.so", "libcoro", "libfiber",
}

// userContexts returns why the process switches user-level contexts (the
// module and what it does), or "" when no module shows it.
func (t *target) userContexts() (module, reason string) {
	for _, m := range t.mods {
		base := filepath.Base(m.Path)
		for _, lib := range coroutineLibraries {
			if strings.HasPrefix(base, lib) {
				return m.Path, "is a coroutine library"
			}
		}
		if strings.HasPrefix(base, "libc.so") {
			continue // defines them
		}
		sym := cached(modCache.ctx, m, func() (string, bool) {
			found := ""
			ok := withModuleELF(t.pid, m, t.maps, func(ef *elf.File) {
				dyn, _ := ef.DynamicSymbols()
				for _, s := range dyn {
					if s.Section == elf.SHN_UNDEF && isContextSymbol(s.Name) {
						found = s.Name
						return
					}
				}
				// A static executable carries its own copy (only there:
				// reading a big .symtab costs time).
				for _, p := range ef.Progs {
					if p.Type == elf.PT_DYNAMIC {
						return
					}
				}
				syms, _ := ef.Symbols()
				for _, s := range syms {
					if s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC && isContextSymbol(s.Name) {
						found = s.Name
						return
					}
				}
			})
			return found, ok
		})
		if sym != "" {
			return m.Path, "uses " + sym
		}
	}
	return "", ""
}

func isContextSymbol(name string) bool {
	for _, s := range contextSymbols {
		if name == s {
			return true
		}
	}
	return false
}
