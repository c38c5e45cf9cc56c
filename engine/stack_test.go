package engine

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// TestStacking applies two patches to the same function (levels): the
// second verifies against the original code under the first one's
// redirect; reverting the second brings the first back; reverting the
// first brings back the original bytes. (Out-of-order reverts:
// TestOutOfOrderRevert.)
func TestStacking(t *testing.T) {
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	first, pub := signedPatchFrom(t, orig.Target, fixed.Target, builder.Options{ID: "fix-a", Version: 1})
	second, pub2 := signedPatchFrom(t, orig.Target, fixed.Target, builder.Options{ID: "fix-b", Version: 2})
	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := proc.Pid()
	pristine := moduleText(t, pid, first)
	opts := Options{Trusted: []patch.PublicKey{pub, pub2}}

	if _, err := Apply(pid, first, opts); err != nil {
		t.Fatal(err)
	}
	withFirst := moduleText(t, pid, first)
	if _, err := Apply(pid, second, opts); err != nil {
		t.Fatalf("second patch on the same function: %v", err)
	}
	if got, err := proc.Probe("set AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); err != nil || !strings.Contains(got, "rejected") {
		t.Errorf("patched process answered %q, %v", got, err)
	}
	if _, err := Revert(pid, "fix-b", 0); err != nil {
		t.Fatal(err)
	}
	if got := moduleText(t, pid, first); !bytes.Equal(got, withFirst) {
		t.Errorf("reverting the second patch did not bring back the first one's code")
	}
	if _, err := Revert(pid, "fix-a", 0); err != nil {
		t.Fatal(err)
	}
	if got := moduleText(t, pid, first); !bytes.Equal(got, pristine) {
		t.Errorf("reverting both did not bring back the original code")
	}
}

// TestOutOfOrderRevert stacks three patches on one function and reverts
// the middle one, then the bottom one first, as libpulp allows: the
// entry keeps the newest jump, the fix stays in effect, the remaining
// patches revert in any order and the original bytes come back.
func TestOutOfOrderRevert(t *testing.T) {
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	var ps []*patch.Patch
	var keys []patch.PublicKey
	for i, id := range []string{"fix-a", "fix-b", "fix-c"} {
		p, pub := signedPatchFrom(t, orig.Target, fixed.Target, builder.Options{ID: id, Version: uint32(i + 1)})
		ps, keys = append(ps, p), append(keys, pub)
	}
	fixedNow := func(proc *fixture.Proc) bool {
		t.Helper()
		got, err := proc.Probe("set AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(got, "rejected")
	}
	ids := func(pid int) []string {
		t.Helper()
		st, err := Status(pid)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range st {
			if a.State != StateApplied {
				t.Errorf("%s is %s", a.ID, a.State)
			}
			out = append(out, a.ID)
		}
		return out
	}
	for _, order := range [][]string{{"fix-b", "fix-c", "fix-a"}, {"fix-a", "fix-b", "fix-c"}, {"fix-b", "fix-a", "fix-c"}} {
		t.Run(strings.Join(order, ","), func(t *testing.T) {
			proc := fixture.Start(t, orig.Program)
			if err := proc.WaitIdle(); err != nil {
				t.Fatal(err)
			}
			pid := proc.Pid()
			pristine := moduleText(t, pid, ps[0])
			for _, p := range ps {
				if _, err := Apply(pid, p, Options{Trusted: keys}); err != nil {
					t.Fatal(err)
				}
			}
			left := map[string]bool{"fix-a": true, "fix-b": true, "fix-c": true}
			for i, id := range order {
				res, err := Revert(pid, id, 0)
				if err != nil {
					t.Fatalf("Revert %s: %v", id, err)
				}
				if res.Functions != 1 {
					t.Errorf("Revert %s: %d functions, want 1", id, res.Functions)
				}
				delete(left, id)
				if got := ids(pid); len(got) != len(left) {
					t.Errorf("after reverting %s: %v applied", id, got)
				}
				if last := i == len(order)-1; fixedNow(proc) == last {
					t.Errorf("after reverting %s the process runs the %s code", id, map[bool]string{true: "fixed", false: "original"}[!last])
				}
			}
			if got := moduleText(t, pid, ps[0]); !bytes.Equal(got, pristine) {
				t.Errorf("the code is not the original after reverting all three")
			}
			if n := patchMappings(t, pid); n != 0 {
				t.Errorf("%d patch mappings left", n)
			}
		})
	}
}
