package builder

import (
	"testing"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// TestLiveWithoutFunctionSections: builds made as distributions make them,
// without -ffunction-sections (only -Wl,--emit-relocs kept), where calls
// between functions of one file have no relocation. The builder binds them
// from the final bytes: the patch replaces the changed function alone (its
// unchanged callers and callees compare equal), and applied to the running
// original it takes effect while the process keeps its state.
func TestLiveWithoutFunctionSections(t *testing.T) {
	t.Parallel()
	for _, nopie := range []bool{false, true} {
		name := "pie"
		flags := []string{"-O2", "-g", "-Wl,--emit-relocs"}
		if nopie {
			name, flags = "nopie", append(flags, "-fno-pie", "-no-pie")
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			orig, err := fixture.Compile("nosections-orig-"+name, []string{"testdata/nosections/orig/svc.c"}, flags...)
			if err != nil {
				t.Fatal(err)
			}
			fixed, err := fixture.Compile("nosections-fixed-"+name, []string{"testdata/nosections/fixed/svc.c"}, flags...)
			if err != nil {
				t.Fatal(err)
			}
			unsigned, err := Build(orig, fixed, Options{ID: "nosections"})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			var names []string
			for _, f := range unsigned.Functions {
				names = append(names, f.Name)
			}
			if len(names) != 1 || names[0] != "check" {
				t.Fatalf("the patch carries %v, want check alone", names)
			}
			p, pub := signLoad(t, unsigned)
			proc := fixture.Start(t, orig)
			for _, ex := range []struct{ in, want string }{{"5", "1 ok 15"}, {"-4", "2 ok -12"}} {
				if got, err := proc.Probe(ex.in); err != nil || got != ex.want {
					t.Fatalf("before: %q -> %q, %v; want %q", ex.in, got, err, ex.want)
				}
			}
			if _, err := engine.Apply(proc.Pid(), p, engine.Options{Trusted: []patch.PublicKey{pub}}); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			for _, ex := range []struct{ in, want string }{{"-4", "3 refused"}, {"7", "4 ok 21"}} {
				if got, err := proc.Probe(ex.in); err != nil || got != ex.want {
					t.Errorf("after: %q -> %q, %v; want %q", ex.in, got, err, ex.want)
				}
			}
		})
	}
}
