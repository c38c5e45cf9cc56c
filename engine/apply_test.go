package engine

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
)

// signedPatch builds, signs and loads the patch of a fixture, the way a
// user's patch reaches the engine.
func signedPatch(t testing.TB, fx *fixture.Fixture, fl fixture.Flags) (p *patch.Patch, pub patch.PublicKey, orig *fixture.Build) {
	t.Helper()
	sp, orig := testutil.FixtureFlagsPatch(t, fx, fl, builder.Options{ID: "test-" + fx.Name}, nil)
	return sp.Patch, sp.Pub, orig
}

// signedPatchFrom builds the patch between two builds, signs it with a new
// key and loads it back, as a user's patch reaches the engine.
func signedPatchFrom(t testing.TB, orig, fixed string, opts builder.Options) (*patch.Patch, patch.PublicKey) {
	t.Helper()
	sp := testutil.SignedPatch(t, orig, fixed, opts, nil)
	return sp.Patch, sp.Pub
}

// moduleText reads the executable mappings of the patch's target module.
func moduleText(t testing.TB, pid int, p *patch.Patch) []byte {
	t.Helper()
	tg, err := openTarget(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	mod, err := tg.module(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, m := range tg.maps {
		if m.Start >= mod.Start && m.End <= mod.End && m.Perms[2] == 'x' {
			buf := make([]byte, m.Size())
			if err := tg.mem.Peek(buf, m.Start); err != nil {
				t.Fatal(err)
			}
			out = append(out, buf...)
		}
	}
	return out
}

// TestApplyFixtures applies each fixture's patch to a freshly started
// original process, checks that it then answers every probe exactly as the
// fixed build does, reverts it, and checks that the text is byte for byte
// what it was and the process still answers.
func TestApplyFixtures(t *testing.T) {
	names, err := fixture.Names()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		fx, err := fixture.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		if fx.Spec.Expect.Result != "patch" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, pub, orig := signedPatch(t, fx, fx.DefaultFlags())
			proc := fixture.Start(t, orig.Program)
			if err := proc.WaitIdle(); err != nil {
				t.Fatal(err)
			}
			pid := proc.Pid()
			before := moduleText(t, pid, p)

			res, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}})
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if res.Functions == 0 {
				t.Errorf("no redirect written")
			}
			for i, pr := range fx.Spec.Probes {
				got, err := proc.Probe(pr.Input)
				if err != nil {
					t.Fatalf("probe %d: %v", i, err)
				}
				if got != pr.Fixed {
					t.Errorf("probe %d %q: got %q, want the fixed build's %q", i, pr.Input, got, pr.Fixed)
				}
			}
			st, err := Status(pid)
			if err != nil || len(st) != 1 || st[0].ID != p.ID || st[0].State != "applied" {
				t.Errorf("Status = %+v, %v; want one applied %s", st, err, p.ID)
			}
			if _, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}}); !errors.Is(err, ErrAlreadyApplied) {
				t.Errorf("second Apply: %v, want ErrAlreadyApplied", err)
			}

			if _, err := Revert(pid, p.ID, 0); err != nil {
				t.Fatalf("Revert: %v", err)
			}
			if after := moduleText(t, pid, p); !bytes.Equal(before, after) {
				t.Errorf("text after revert differs from before apply")
			}
			if st, err := Status(pid); err != nil || len(st) != 0 {
				t.Errorf("Status after revert = %+v, %v; want none", st, err)
			}
			if _, err := proc.Probe(fx.Spec.Probes[0].Input); err != nil {
				t.Errorf("process does not answer after revert: %v", err)
			}
		})
	}
}

// TestMainThreadExited: a process whose main thread has exited
// (pthread_exit in main) is refused with a one-line reason, and runs on
// untouched.
func TestMainThreadExited(t *testing.T) {
	orig, fixed, err := fixture.CompilePair("mainexit", "testdata/mainexit", "mainexit.c", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "mainexit-fix"})
	proc := fixture.Start(t, orig)
	if got, err := proc.Probe("hello"); err != nil || got != "orig hello" {
		t.Fatalf("first answer %q, %v", got, err)
	}
	// The main thread may still be on its way out.
	testutil.Eventually(t, 30*time.Second, func() bool { return leaderGone(proc.Pid()) }, "the main thread of %d did not exit", proc.Pid())
	_, err = Apply(proc.Pid(), p, Options{Trusted: []patch.PublicKey{pub}})
	if !errors.Is(err, ErrMainThreadExited) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Apply: %v; want ErrMainThreadExited in one line", err)
	}
	if got, err := proc.Probe("hello"); err != nil || got != "orig hello" {
		t.Errorf("after the refusal: %q, %v", got, err)
	}
}
