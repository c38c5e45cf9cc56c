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
