package engine

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestProcessModules: a running process's executable is listed with the
// build-id of its file, from the cache the second time; a pid that does
// not exist is refused as such.
func TestProcessModules(t *testing.T) {
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	b, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	want, err := fixture.BuildID(b.Program)
	if err != nil {
		t.Fatal(err)
	}
	proc := fixture.Start(t, b.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	var cache BuildIDCache
	find := func() *Module {
		t.Helper()
		mods, err := ProcessModules(proc.Pid(), &cache)
		if err != nil {
			t.Fatal(err)
		}
		for i := range mods {
			if bytes.Equal(mods[i].BuildID, want) {
				return &mods[i]
			}
		}
		return nil
	}
	if m := find(); m == nil || m.Path != b.Program {
		t.Fatalf("the executable (build-id %x) is not among the modules: %+v", want, m)
	}
	if len(cache.m) == 0 {
		t.Fatal("nothing cached")
	}
	if m := find(); m == nil {
		t.Fatal("the executable is gone from the modules on the second look (the cache)")
	}
	if _, err := ProcessModules(noSuchPid, &cache); !errors.Is(err, ErrNoProcess) {
		t.Errorf("a missing pid: %v, want ErrNoProcess", err)
	}
}
