package builder

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// TestIdentityVariants builds the fixtures of the builder's identity
// problems (unnamed data, renamed files, cold parts, thread-local pointers)
// under PIE, -no-pie and with -g: each must give what its fixture states,
// at every setting, and round-trip. local_array's patch holds twice alone
// and stays small: its unnamed template (in .data under PIE, in .rodata
// reached by absolute relocations under -no-pie) must neither pull name_of
// in nor glue unrelated literals into one chunk.
func TestIdentityVariants(t *testing.T) {
	subjects := []string{"local_array", "static_rename", "cold_only", "tls_pointer"}
	variants := []fixture.Flags{
		{Opt: "-O2"}, {Opt: "-O2", NoPIE: true}, {Opt: "-O2", Debug: true},
		{Opt: "-O2", NoPIE: true, Debug: true}, {Opt: "-O3"}, {Opt: "-O3", NoPIE: true},
	}
	for _, name := range subjects {
		fx, err := fixture.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range variants {
			if fx.Spec.Target == fixture.TargetLib && v.NoPIE {
				continue
			}
			fl := fx.DefaultFlags()
			fl.Opt, fl.NoPIE, fl.Debug = v.Opt, v.NoPIE, v.Debug
			label := strings.TrimPrefix(v.Opt, "-")
			if v.NoPIE {
				label += "-nopie"
			}
			if v.Debug {
				label += "-g"
			}
			t.Run(name+"/"+label, func(t *testing.T) {
				t.Parallel()
				orig, fixed := buildPair(t, fx, fl)
				p, err := Build(orig.Target, fixed.Target, Options{ID: "id-" + name})
				checkOutcome(t, fx, orig.Target, fixed.Target, p, err)
				if p == nil || name != "local_array" {
					return
				}
				if replaced, added := patchNames(p); len(replaced) != 1 || len(added) != 0 {
					t.Errorf("patch replaces %v and adds %v; want twice alone", replaced, added)
				}
				key, _, err := patch.GenerateKey()
				if err != nil {
					t.Fatal(err)
				}
				data, err := patch.Sign(p, key)
				if err != nil {
					t.Fatal(err)
				}
				if len(data) > 1200 {
					t.Errorf("patch file is %d bytes, want about 1 KB for one small function", len(data))
				}
			})
		}
	}
}

// TestIdentityShapes builds testdata/identity, where only changed() differs,
// under PIE and -no-pie: self-referring const data, an offset-base operand,
// aliased const tables and tail-merged strings must not make any other
// function look changed.
func TestIdentityShapes(t *testing.T) {
	for _, extra := range [][]string{nil, {"-fno-pie", "-no-pie"}, {"-g"}, {"-O3", "-fno-pie", "-no-pie"}} {
		t.Run(strings.Join(append([]string{"default"}, extra...), ""), func(t *testing.T) {
			t.Parallel()
			orig, fixed, err := fixture.CompilePair("ident", "testdata/identity", "ident.c", extra...)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Build(orig, fixed, Options{})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if replaced, added := patchNames(p); !slices.Equal(replaced, []string{"changed"}) || len(added) != 0 {
				t.Errorf("patch replaces %v and adds %v; want changed alone", replaced, added)
			}
			if err := roundTrip(orig, fixed, p); err != nil {
				t.Errorf("round trip: %v", err)
			}
		})
	}
}

// TestRenameAmbiguous: a fix that renamed two files that each hold a static
// count cannot tell which count is which: the build is refused, naming the
// object, rather than either guessing or silently giving the patch fresh
// zeroed copies.
func TestRenameAmbiguous(t *testing.T) {
	dir := "testdata/rename/"
	orig, err := fixture.Compile("rename-orig", []string{dir + "orig/main.c", dir + "orig/a.c", dir + "orig/b.c"}, fixture.PatchFlags...)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := fixture.Compile("rename-fixed", []string{dir + "fixed/main.c", dir + "fixed/a-fixed.c", dir + "fixed/b-fixed.c"}, fixture.PatchFlags...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Build(orig, fixed, Options{})
	var ue *UnsupportedError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "count") || !strings.Contains(err.Error(), "a.c:count") {
		t.Fatalf("Build: %v; want an UnsupportedError naming count and its candidates", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
}

// TestCxxThrowRefused: a changed C++ function that throws, though it has no
// handler of its own, is refused with the reason: the runtime could not
// unwind the new code.
func TestCxxThrowRefused(t *testing.T) {
	orig, fixed, err := fixture.CompilePair("cxxthrow", "testdata/cxxthrow", "throw.cc", "-Wl,--no-as-needed", "-lstdc++")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Build(orig, fixed, Options{})
	var ue *UnsupportedError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "check") || !strings.Contains(err.Error(), "__cxa_throw") {
		t.Fatalf("Build: %v; want an UnsupportedError naming check and __cxa_throw", err)
	}
}

// TestLineNumbersLeftOut: functions that differ only in a __LINE__ (an
// assert, a log line with "file.c:N") or a __DATE__/__TIME__ stamp are left
// out of the patch and reported; IncludeLineChanges carries them. A changed
// constant that is not a line number (twice's limit in local_array, say)
// is never taken for one: that is checked by every other fixture.
func TestLineNumbersLeftOut(t *testing.T) {
	fx, err := fixture.Load("line_number")
	if err != nil {
		t.Fatal(err)
	}
	for _, fl := range []fixture.Flags{{Opt: "-O2"}, {Opt: "-O2", NoPIE: true}, {Opt: "-O2", Debug: true}, {Opt: "-O0"}} {
		t.Run(fl.Opt+map[bool]string{true: "-nopie"}[fl.NoPIE]+map[bool]string{true: "-g"}[fl.Debug], func(t *testing.T) {
			t.Parallel()
			f := fx.DefaultFlags()
			f.Opt, f.NoPIE, f.Debug = fl.Opt, fl.NoPIE, fl.Debug
			orig, fixed := buildPair(t, fx, f)
			var rep Report
			p, err := Build(orig.Target, fixed.Target, Options{Report: &rep})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			replaced, added := patchNames(p)
			if !slices.Equal(replaced, []string{"check_slot"}) || len(added) != 0 {
				t.Errorf("patch replaces %v, adds %v; want check_slot alone", replaced, added)
			}
			var left []string
			for _, l := range rep.LeftOut {
				left = append(left, l.Function)
				if !strings.Contains(l.Reason, "line") && !strings.Contains(l.Reason, "stamp") {
					t.Errorf("%s left out for %q", l.Function, l.Reason)
				}
			}
			for _, want := range []string{"main.c:get_slot", "main.c:version", "main.c:built_at"} {
				if !slices.Contains(left, want) {
					t.Errorf("%s not reported as left out; left out: %v", want, rep.LeftOut)
				}
			}
			p, err = Build(orig.Target, fixed.Target, Options{IncludeLineChanges: true})
			if err != nil {
				t.Fatalf("Build with IncludeLineChanges: %v", err)
			}
			replaced, _ = patchNames(p)
			for _, want := range []string{"check_slot", "get_slot", "version"} {
				if !slices.Contains(replaced, want) {
					t.Errorf("IncludeLineChanges: %s not replaced; replaced %v", want, replaced)
				}
			}
		})
	}
}

// TestLimitIsNotALine: a changed constant passed in the call that also
// gets __FILE__ and __LINE__, but not in the line's position, is a real
// change: the function stays in the patch.
func TestLimitIsNotALine(t *testing.T) {
	for _, extra := range [][]string{nil, {"-O0"}, {"-fno-pie", "-no-pie"}} {
		orig, fixed, err := fixture.CompilePair("limit", "testdata/lines", "limit.c", extra...)
		if err != nil {
			t.Fatal(err)
		}
		var rep Report
		p, err := Build(orig, fixed, Options{Report: &rep})
		if err != nil {
			t.Fatalf("%v: Build: %v", extra, err)
		}
		if replaced, _ := patchNames(p); !slices.Contains(replaced, "limited") || len(rep.LeftOut) != 0 {
			t.Errorf("%v: replaced %v, left out %v; want limited replaced and nothing left out", extra, replaced, rep.LeftOut)
		}
	}
}

// TestAnonBinding: a changed function that copies a local array template
// kept as unnamed data goes on using the original's template (PIE: bound to
// the original's .data, no copy carried) and round-trips.
func TestAnonBinding(t *testing.T) {
	for _, extra := range [][]string{nil, {"-fno-pie", "-no-pie"}} {
		orig, fixed, err := fixture.CompilePair("anon", "testdata/anon", "anon.c", extra...)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Build(orig, fixed, Options{})
		if err != nil {
			t.Fatalf("%v: Build: %v", extra, err)
		}
		if replaced, added := patchNames(p); !slices.Equal(replaced, []string{"name_of"}) || len(added) != 0 {
			t.Errorf("%v: patch replaces %v and adds %v; want name_of alone", extra, replaced, added)
		}
		if len(p.Data) != 0 || p.BSSSize != 0 {
			t.Errorf("%v: patch carries %d bytes of data and %d of bss; want the original's template used", extra, len(p.Data), p.BSSSize)
		}
		if err := roundTrip(orig, fixed, p); err != nil {
			t.Errorf("%v: round trip: %v", extra, err)
		}
	}
}
