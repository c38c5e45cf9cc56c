package engine

import (
	"testing"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// busyTarget starts engine/testdata/busy, whose worker thread enters the
// patched function every second and leaves it, and returns it with the
// patch of that function: an apply catches the worker at its return (see
// heldTarget for a worker that stays inside until told).
func busyTarget(t *testing.T) (*fixture.Proc, *patch.Patch, patch.PublicKey) {
	t.Helper()
	orig, fixed, err := fixture.CompilePair("busy", "testdata/busy", "busy.c", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "busy-fix"})
	proc := fixture.Start(t, orig)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	return proc, p, pub
}
