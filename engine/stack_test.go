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
// redirect; reverting the first while the second sits on top is refused;
// reverting the second brings the first back; reverting the first brings
// back the original bytes.
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
	if _, err := Revert(pid, "fix-a", 0); err == nil || !strings.Contains(err.Error(), "fix-b") {
		t.Errorf("out-of-order revert: %v, want a refusal naming fix-b", err)
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
