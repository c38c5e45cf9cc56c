package builder

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestLineAloneLeftOut: with -g, functions that pass their __LINE__ alone
// (no __FILE__ beside it: as an argument of an accounting helper, as the
// first argument, through an inlined helper written over two lines) and
// differ only in it are left out and reported, the line table saying that
// their statements moved by as much. Limits that changed as a line would
// (cap: to the next line's number; window: to its own line plus the shift,
// in a function that did not move) and a limit changed beside a __LINE__
// (spend) stay in the patch. Without -g nothing says that a number passed
// alone is a line: take, give and peek are carried.
func TestLineAloneLeftOut(t *testing.T) {
	fx, err := fixture.Load("line_arg")
	if err != nil {
		t.Fatal(err)
	}
	real := []string{"cap", "check_amount", "spend", "window"}
	for _, tt := range []struct {
		fl       fixture.Flags
		leftOut  []string
		replaced []string
	}{
		{fixture.Flags{Opt: "-O2", Debug: true}, []string{"give", "peek", "take"}, real},
		{fixture.Flags{Opt: "-O2", Debug: true, NoPIE: true}, []string{"give", "peek", "take"}, real},
		{fixture.Flags{Opt: "-O0", Debug: true}, []string{"give", "peek", "take"}, real},
		{fixture.Flags{Opt: "-O2"}, nil, []string{"cap", "check_amount", "give", "peek", "spend", "take", "window"}},
	} {
		name := tt.fl.Opt + map[bool]string{true: "-nopie"}[tt.fl.NoPIE] + map[bool]string{true: "-g"}[tt.fl.Debug]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := fx.DefaultFlags()
			f.Opt, f.NoPIE, f.Debug = tt.fl.Opt, tt.fl.NoPIE, tt.fl.Debug
			orig, fixed := buildPair(t, fx, f)
			var rep Report
			p, err := Build(orig.Target, fixed.Target, Options{Report: &rep})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			replaced, added := patchNames(p)
			slices.Sort(replaced)
			if !slices.Equal(replaced, tt.replaced) || len(added) != 0 {
				t.Errorf("patch replaces %v, adds %v; want %v", replaced, added, tt.replaced)
			}
			var left []string
			for _, l := range rep.LeftOut {
				left = append(left, strings.TrimPrefix(l.Function, "main.c:"))
				if !strings.Contains(l.Reason, "__LINE__") {
					t.Errorf("%s left out for %q", l.Function, l.Reason)
				}
			}
			slices.Sort(left)
			if !slices.Equal(left, tt.leftOut) {
				t.Errorf("left out %v, want %v (%v)", left, tt.leftOut, rep.LeftOut)
			}
			if err := roundTrip(orig.Target, fixed.Target, p); err != nil {
				t.Errorf("round trip: %v", err)
			}
			// IncludeLineChanges carries them all.
			p, err = Build(orig.Target, fixed.Target, Options{IncludeLineChanges: true})
			if err != nil {
				t.Fatalf("Build with IncludeLineChanges: %v", err)
			}
			replaced, _ = patchNames(p)
			for _, want := range tt.leftOut {
				if !slices.Contains(replaced, want) {
					t.Errorf("IncludeLineChanges: %s not replaced; replaced %v", want, replaced)
				}
			}
		})
	}
}

// TestJumpTablePadding: a jump table that moved because the one before it
// grew keeps its entries, but the padding after it changed: the function
// that owns it did not change and stays out of the patch, PIC (4-byte
// relative entries) and not (8-byte absolute ones).
func TestJumpTablePadding(t *testing.T) {
	for _, extra := range [][]string{nil, {"-fno-pie", "-no-pie"}} {
		orig, fixed, err := fixture.CompilePair("jumptable", "testdata/jumptable", "jt.c", extra...)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Build(orig, fixed, Options{})
		if err != nil {
			t.Fatalf("%v: Build: %v", extra, err)
		}
		if replaced, added := patchNames(p); !slices.Equal(replaced, []string{"checker"}) || len(added) != 0 {
			t.Errorf("%v: patch replaces %v and adds %v; want checker alone", extra, replaced, added)
		}
		if err := roundTrip(orig, fixed, p); err != nil {
			t.Errorf("%v: round trip: %v", extra, err)
		}
	}
}

// TestLiteralAtItsLine: quota's limit is written as the number of its own
// line and the fix raises it by as much as its line moved: in the binary
// and the line tables, just what a moved __LINE__ looks like. While the
// source files are where DWARF says they are, they show a literal there,
// and quota stays in the patch. Without them nothing tells the two apart:
// quota is then left out, and reported. The pair is compiled here, not
// through the fixture cache: a cached build names the source directory of
// whichever checkout built it first.
func TestLiteralAtItsLine(t *testing.T) {
	dir := t.TempDir()
	var bins [2]string
	for i, v := range []string{"orig", "fixed"} {
		src := filepath.Join(dir, v, "quota.c")
		data, err := os.ReadFile(filepath.Join("testdata/linequota", v, "quota.c"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(src, data, 0o644); err != nil {
			t.Fatal(err)
		}
		bins[i] = filepath.Join(dir, v, "quota")
		args := append(append([]string{}, fixture.PatchFlags...), "-g", "-o", bins[i], src)
		if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, out)
		}
	}
	var rep Report
	p, err := Build(bins[0], bins[1], Options{Report: &rep})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if replaced, _ := patchNames(p); !slices.Equal(replaced, []string{"check", "quota"}) || len(rep.LeftOut) != 0 {
		t.Errorf("with the sources: patch replaces %v, left out %v; want check and quota replaced, nothing left out", replaced, rep.LeftOut)
	}
	for _, v := range []string{"orig", "fixed"} {
		if err := os.Remove(filepath.Join(dir, v, "quota.c")); err != nil {
			t.Fatal(err)
		}
	}
	rep = Report{}
	p, err = Build(bins[0], bins[1], Options{Report: &rep})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if replaced, _ := patchNames(p); !slices.Equal(replaced, []string{"check"}) || len(rep.LeftOut) != 1 || rep.LeftOut[0].Function != "quota.c:quota" {
		t.Errorf("without the sources: patch replaces %v, left out %v; want check replaced and quota left out", replaced, rep.LeftOut)
	}
}
