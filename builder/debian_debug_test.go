package builder

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/hotpatch/hotpatch/internal/buildid"
)

// TestDebianDebugFile reads a debug file Debian ships, the way a retarget
// with --symbols does: libc6-dbg's file for the installed libc.so.6 (in the
// main archive, unlike the -dbgsym packages of the debug archive, which
// this machine cannot reach). Its build-id must match, its symbol table
// give the installed functions (globals and file statics), its compressed
// DWARF must read, and the installed libc's own call frame information
// must agree with the symbols on where functions start and end.
func TestDebianDebugFile(t *testing.T) {
	t.Parallel()
	const libc = "/lib/x86_64-linux-gnu/libc.so.6"
	id, err := buildid.Read(libc)
	if err != nil {
		t.Skipf("no libc.so.6 with a build-id here: %v", err)
	}
	h := hex.EncodeToString(id)
	debug := filepath.Join("/usr/lib/debug/.build-id", h[:2], h[2:]+".debug")
	if _, err := os.Stat(debug); err != nil {
		t.Skipf("libc6-dbg for this libc is not installed (%v)", err)
	}
	in, err := openInstalled(libc, debug)
	if err != nil {
		t.Fatalf("openInstalled with Debian's debug file: %v", err)
	}
	// A global (malloc's first name in the table) and a file static.
	for _, key := range []string{"__libc_malloc", "malloc.c:_int_malloc"} {
		if s := in.byKey[key]; s == nil || s.size == 0 {
			t.Errorf("symbol %s: %+v, want it with a size", key, s)
		}
	}
	di, err := loadDebugInfo(debug)
	if err != nil || di == nil || len(di.cus) < 100 || len(di.subs) < 1000 {
		t.Fatalf("DWARF of the debug file: %v, %d units", err, func() int {
			if di == nil {
				return 0
			}
			return len(di.cus)
		}())
	}
	frames, err := loadFrames(libc)
	if err != nil {
		t.Fatal(err)
	}
	var checked, agree int
	for _, fn := range in.funcs {
		if fn.size == 0 {
			continue
		}
		checked++
		if b, e, ok, _ := frames.Range(fn.addr); ok && b == fn.addr && e-b == fn.size {
			agree++
		}
	}
	if checked < 2000 || agree*10 < checked*9 {
		t.Errorf("%d of %d functions of the debug file have an FDE of their exact range in the installed libc; want nearly all", agree, checked)
	}
	t.Logf("%s: %d functions, %d with an FDE of their exact range; %d compile units", debug, checked, agree, len(di.cus))
}
