package cli

import (
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// TestBuildMismatchedFlags: a pair built at -O1 and -O2 is blamed on the
// flags that differ, not on missing flags in the C runtime's frame_dummy.
func TestBuildMismatchedFlags(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	_, key, _ := keygen(t)
	out := filepath.Join(t.TempDir(), "x.hpatch")
	for _, tt := range []struct {
		name  string
		extra []string
		want  string
	}{
		{"without -g", nil, "the two builds differ in compiler flags or compiler: "},
		{"with -g", []string{"-g"}, "the two builds differ in compiler flags (original: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			build := func(level, variant string) string {
				flags := append(append([]string{level}, fixture.PatchFlags[1:]...), tt.extra...)
				p, err := fixture.Compile("ledger-"+variant+level, []string{"../demo/ledger/" + variant + "/ledger.c"}, flags...)
				if err != nil {
					t.Fatal(err)
				}
				return p
			}
			code, _, stderr := run(t, "build", "--original", build("-O1", "orig"), "--patched", build("-O2", "fixed"), "--key", key, "-o", out)
			if code != 1 || !strings.HasPrefix(stderr, "hotpatch build: "+tt.want) {
				t.Errorf("exit %d, stderr %q; want it to start with %q", code, stderr, tt.want)
			}
			if tt.extra != nil && (!strings.Contains(stderr, "-O1") || !strings.Contains(stderr, "-O2")) {
				t.Errorf("the flags are not quoted: %s", stderr)
			}
		})
	}
}

// TestBuildDefaultID: without --id a patch is named after its target and
// a hash of the fix, the same for the same fix, not after the fixed
// build's build-id.
func TestBuildDefaultID(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc")
	}
	orig, fixed, err := fixture.CompilePair("ledger", "../demo/ledger", "ledger.c")
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := keygen(t)
	dir := t.TempDir()
	var ids []string
	for _, name := range []string{"a.hpatch", "b.hpatch"} {
		out := filepath.Join(dir, name)
		if code, _, stderr := run(t, "build", "--original", orig, "--patched", fixed, "--key", key, "-o", out); code != 0 {
			t.Fatalf("build: %s", stderr)
		}
		p, err := patch.LoadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
	}
	bid, err := fixture.BuildID(fixed)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^ledger-orig-[0-9a-f]{8}$`).MatchString(ids[0]) || ids[0] != ids[1] ||
		strings.HasSuffix(ids[0], hex.EncodeToString(bid[:4])) {
		t.Errorf("default ids %q (fixed build-id %x)", ids, bid)
	}
}
