package builder

import (
	"errors"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// TestLiveIdentity applies patches of the identity fixtures to running
// originals that already hold state, and checks what the process answers
// next: the state goes on (a renamed file's static count is the live one,
// not a fresh zero) and the fix is in effect (a change found only in a
// .cold part runs, because its parent is redirected).
func TestLiveIdentity(t *testing.T) {
	type exchange struct{ in, want string }
	tests := []struct {
		fixture       string
		before, after []exchange
	}{
		{"static_rename",
			[]exchange{{"tick 5", "1 ok count=5"}, {"tick 7", "2 ok count=12"}},
			[]exchange{{"tick 500", "3 refused count=12"}, {"tick 1", "4 ok count=13"}, {"count", "5 count=13"}}},
		{"cold_only",
			[]exchange{{"req 3", "1 error: bad request, internal code 0x5eed 3"}, {"req 4", "2 ok 4"}},
			[]exchange{{"req 6", "3 error: bad request 6"}, {"req 7", "4 ok 7"}}},
		{"local_array",
			[]exchange{{"double -1", "1 -2"}, {"name 7", "2 s7"}},
			[]exchange{{"double -1", "3 0"}, {"name 22", "4 s22"}}},
		{"tls_pointer",
			[]exchange{{"show", "1 original banner"}, {"set x", "2 set"}},
			[]exchange{{"show:y", "3 :y"}, {"set z", "4 set"}, {"show", "5 banner set"}}},
	}
	for _, tt := range tests {
		for _, nopie := range []bool{false, true} {
			fx, err := fixture.Load(tt.fixture)
			if err != nil {
				t.Fatal(err)
			}
			if nopie && fx.Spec.Target == fixture.TargetLib {
				continue
			}
			name := tt.fixture
			if nopie {
				name += "/nopie"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				fl := fx.DefaultFlags()
				fl.NoPIE = nopie
				orig, fixed := buildPair(t, fx, fl)
				unsigned, err := Build(orig.Target, fixed.Target, Options{ID: "live-" + tt.fixture})
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				p, pub := signLoad(t, unsigned)
				proc := fixture.Start(t, orig.Program)
				probe := func(ex []exchange) {
					t.Helper()
					for _, e := range ex {
						got, err := proc.Probe(e.in)
						if err != nil {
							t.Fatalf("%q: %v", e.in, err)
						}
						if got != e.want {
							t.Errorf("%q: got %q, want %q", e.in, got, e.want)
						}
					}
				}
				probe(tt.before)
				if err := proc.WaitIdle(); err != nil {
					t.Fatal(err)
				}
				res, err := engine.Apply(proc.Pid(), p, engine.Options{Trusted: []patch.PublicKey{pub}})
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				if res.Functions == 0 {
					t.Errorf("Apply redirected no function")
				}
				probe(tt.after)
			})
		}
	}
}

// TestLiveCxxRefused: the C++ handler change of cxx_eh is refused at build
// time with its reason, and the running original, which already threw and
// caught, goes on answering as before: nothing reached it.
func TestLiveCxxRefused(t *testing.T) {
	fx, err := fixture.Load("cxx_eh")
	if err != nil {
		t.Fatal(err)
	}
	orig, fixed := buildPair(t, fx, fx.DefaultFlags())
	proc := fixture.Start(t, orig.Program)
	for i, pr := range fx.Spec.Probes[:2] {
		if got, err := proc.Probe(pr.Input); err != nil || got != pr.Orig {
			t.Fatalf("probe %d: %q, %v; want %q", i, got, err, pr.Orig)
		}
	}
	_, err = Build(orig.Target, fixed.Target, Options{})
	var ue *UnsupportedError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "outer") || !strings.Contains(err.Error(), "exception") {
		t.Fatalf("Build: %v; want a refusal naming outer and its exception handling", err)
	}
	if got, err := proc.Probe("run 5"); err != nil || got != "3 caught in lib v1 5, then caught in main" {
		t.Errorf("after the refusal: %q, %v", got, err)
	}
}
