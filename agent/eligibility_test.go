package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/server/api"
)

// TestInventoryEligibility: the inventory carries what blocks or hinders
// patching, per process (here a seccomp filter) and for the host (nothing,
// as root).
func TestInventoryEligibility(t *testing.T) {
	needRoot(t)
	bin, err := fixture.Compile("elig-seccomp", []string{"../eligibility/testdata/seccomp.c"}, fixture.PatchFlags...)
	if err != nil {
		t.Fatal(err)
	}
	p := fixture.Start(t, bin)
	if _, err := p.Probe("x"); err != nil {
		t.Fatal(err)
	}
	iv := newInventorier(func(pid int) bool { return pid == p.Pid() })
	inv, err := iv.build()
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Eligibility) != 0 {
		t.Errorf("root's host has problems: %+v", inv.Eligibility)
	}
	if len(inv.Processes) != 1 {
		t.Fatalf("processes: %+v", inv.Processes)
	}
	want := []api.Finding{{Check: "seccomp", Status: "block",
		Message: "runs under a seccomp filter: the engine refuses it, since the filter might forbid the system calls it makes in the process (mmap, memfd_create, mprotect) or kill the process for them"}}
	if diff := cmp.Diff(want, inv.Processes[0].Blockers); diff != "" {
		t.Errorf("blockers (-want +got):\n%s", diff)
	}
}
