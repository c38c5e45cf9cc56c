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

// gatedProviders are libraries that switch contexts only for code that
// calls an API of theirs, by file name prefix and that API: OpenSSL's
// libcrypto runs ASYNC jobs on their own stacks, and a job is suspended
// there only by ASYNC_pause_job, which only an async engine (afalg, QAT) or
// a program's own job function calls. libssl imports ASYNC_start_job for
// SSL_MODE_ASYNC, but a job that never pauses runs to its end on the
// thread's behalf. Mapping libcrypto and libssl, as every program that
// speaks TLS does, is no sign of coroutines.
var gatedProviders = map[string]string{"libcrypto.so": "ASYNC_pause_job"}

// ctxInfo is what a module's symbols say about user-level contexts.
type ctxInfo struct {
	uses    string          // a context-switching function it imports (or, static, defines)
	imports map[string]bool // the gated APIs of gatedProviders it imports
}

// userContexts returns why the process switches user-level contexts (the
// module and what it does), or "" when no module shows it.
func (t *target) userContexts() (module, reason string) {
	infos := make([]ctxInfo, len(t.mods))
	gated := map[string]bool{} // gated APIs some module imports
	for i, m := range t.mods {
		infos[i] = t.ctxInfo(m)
		for api := range infos[i].imports {
			gated[api] = true
		}
	}
	for i, m := range t.mods {
		base := filepath.Base(m.Path)
		for _, lib := range coroutineLibraries {
			if strings.HasPrefix(base, lib) {
				return m.Path, "is a coroutine library"
			}
		}
		if infos[i].uses == "" {
			continue
		}
		if api, ok := gatedProvider(base); ok && !gated[api] {
			continue // it can, but no module calls the API that does
		}
		return m.Path, "uses " + infos[i].uses
	}
	return "", ""
}

func gatedProvider(base string) (api string, ok bool) {
	for prefix, api := range gatedProviders {
		if strings.HasPrefix(base, prefix) {
			return api, true
		}
	}
	return "", false
}

// ctxInfo reads (once per build-id) what m imports that concerns user-level
// contexts.
func (t *target) ctxInfo(m Module) ctxInfo {
	if strings.HasPrefix(filepath.Base(m.Path), "libc.so") {
		return ctxInfo{} // defines them
	}
	return cached(modCache.ctx, m, func() (ctxInfo, bool) {
		var info ctxInfo
		ok := withModuleELF(t.pid, m, t.maps, func(ef *elf.File) {
			dyn, _ := ef.DynamicSymbols()
			for _, s := range dyn {
				if s.Section != elf.SHN_UNDEF {
					continue
				}
				if isContextSymbol(s.Name) && info.uses == "" {
					info.uses = s.Name
				}
				for _, api := range gatedProviders {
					if s.Name == api {
						if info.imports == nil {
							info.imports = map[string]bool{}
						}
						info.imports[api] = true
					}
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
					info.uses = s.Name
					return
				}
			}
		})
		return info, ok
	})
}

func isContextSymbol(name string) bool {
	for _, s := range contextSymbols {
		if name == s {
			return true
		}
	}
	return false
}
