package engine

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// TestApplyRangeTakenMeanwhile: the process's other threads run while the
// patch is mapped, so one may map memory (a malloc arena, a thread stack)
// in the range just chosen for it; seen once in the corpus, under load.
// The hook takes the range in the target itself, right before the patch's
// mmap: Apply must choose again and apply, leaving the process's own
// mapping where it is.
func TestApplyRangeTakenMeanwhile(t *testing.T) {
	// Not parallel: the hook is package state (and acts on this pid only).
	names, err := fixture.Names()
	if err != nil {
		t.Fatal(err)
	}
	var fx *fixture.Fixture
	for _, n := range names {
		f, err := fixture.Load(n)
		if err != nil {
			t.Fatal(err)
		}
		if f.Spec.Expect.Result == "patch" {
			fx = f
			break
		}
	}
	if fx == nil {
		t.Fatal("no patchable fixture")
	}
	p, pub, orig := signedPatch(t, fx, fx.DefaultFlags())
	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := proc.Pid()
	var taken []uint64
	testHookBeforeMap = func(s *session, base, size uint64) {
		if s.t.pid != pid || len(taken) > 0 {
			return
		}
		addr, err := s.syscall(unix.SYS_MMAP, base, size, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
		if err != nil || addr != base {
			t.Errorf("the hook could not take %#x: %#x, %v", base, addr, err)
			return
		}
		taken = append(taken, addr)
	}
	defer func() { testHookBeforeMap = nil }()

	res, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}})
	if err != nil {
		t.Fatalf("Apply after the range was taken: %v", err)
	}
	if len(taken) != 1 {
		t.Fatalf("the hook took %d ranges, want 1: the test did not take the chosen range", len(taken))
	}
	if res.Base == taken[0] {
		t.Errorf("the patch is at %#x, the range the process took", res.Base)
	}
	maps, err := readMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range maps {
		if m.Start == taken[0] {
			found = true
		}
	}
	if !found {
		t.Errorf("the process's own mapping at %#x is gone", taken[0])
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
}
