//go:build linux && amd64

package engine

import (
	"debug/elf"
	"sync"

	"github.com/hotpatch/hotpatch/unwind"
)

// modCache keeps what the engine reads from module files (call frame
// information, dynamic symbols) by build-id: the same build-id is the same
// file content. A long-running caller that patches many processes of the
// same programs (the agent) then reads libc's .eh_frame once, not once per
// process. It is bounded: when full it starts over.
var modCache = struct {
	mu   sync.Mutex
	cfi  map[string]*unwind.Table
	syms map[string]map[string][]elf.Symbol
	ctx  map[string]ctxInfo // the user-context functions the module uses
}{cfi: map[string]*unwind.Table{}, syms: map[string]map[string][]elf.Symbol{}, ctx: map[string]ctxInfo{}}

const modCacheMax = 256

// cached returns m's entry in c, loading it with load on a miss. A module
// without a build-id is not cached.
func cached[T any](c map[string]T, m Module, load func() (T, bool)) T {
	if len(m.BuildID) == 0 {
		v, _ := load()
		return v
	}
	key := string(m.BuildID)
	modCache.mu.Lock()
	v, ok := c[key]
	modCache.mu.Unlock()
	if ok {
		return v
	}
	v, ok = load()
	if !ok {
		return v // not cached: a read error may be transient
	}
	modCache.mu.Lock()
	if len(c) >= modCacheMax {
		clear(c)
	}
	c[key] = v
	modCache.mu.Unlock()
	return v
}
