package engine

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// reloadTarget starts testdata/fixtures/dlreload, a program that dlopen()s
// the shared_lib fixture's original library and can unload it and load it
// again, and returns it with the signed patch of that library.
func reloadTarget(t *testing.T) (*fixture.Proc, *patch.Patch, patch.PublicKey) {
	t.Helper()
	fx, err := fixture.Load("shared_lib")
	if err != nil {
		t.Fatal(err)
	}
	p, pub, orig := signedPatch(t, fx, fx.DefaultFlags())
	host, err := fixture.Compile("dlreload", []string{filepath.Join(fixture.Root(), "testdata", "fixtures", "dlreload", "host.c")}, "-O2", "-ldl")
	if err != nil {
		t.Fatal(err)
	}
	proc := fixture.StartArgs(t, []string{host, orig.Lib})
	if got, err := proc.Probe("listen 65616"); err != nil || got != "listening on 80" {
		t.Fatalf("the original library answered %q, %v", got, err)
	}
	return proc, p, pub
}

// patchMappings counts the patch mappings (hotpatch:ID memfds) of pid.
func patchMappings(t *testing.T, pid int) int {
	t.Helper()
	maps, err := readMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range maps {
		if strings.Contains(m.Path, "/memfd:"+mappingPrefix) {
			seen[m.Dev+":"+itoa(int(m.Inode))] = true
		}
	}
	return len(seen)
}

func probe(t *testing.T, proc *fixture.Proc, line string) string {
	t.Helper()
	got, err := proc.Probe(line)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestLostPatch: a patched library unloaded and loaded again comes back
// with its original code; the patch is then "lost", never "applied". Apply
// cleans the stale mapping and applies it again, Revert cleans it up
// without writing into the library; a library unloaded for good leaves a
// lost patch that only Revert can clean.
func TestLostPatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reload string // the command that reloads the library
		again  bool   // the library is there to patch again
	}{
		{"same address", "reload", true},
		{"new address", "move", true},
		{"unloaded", "unload", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			proc, p, pub := reloadTarget(t)
			pid := proc.Pid()
			opts := Options{Trusted: []patch.PublicKey{pub}}
			where := probe(t, proc, "where")
			if _, err := Apply(pid, p, opts); err != nil {
				t.Fatal(err)
			}
			if got := probe(t, proc, "listen 65616"); got != "invalid port" {
				t.Fatalf("patched library answered %q", got)
			}

			reply := probe(t, proc, tc.reload)
			switch tc.reload {
			case "reload":
				if strings.TrimPrefix(reply, "reloaded ") != where {
					t.Fatalf("the library came back elsewhere (%q, was %q)", reply, where)
				}
			case "move":
				if !strings.HasPrefix(reply, "moved to ") || strings.TrimPrefix(reply, "moved to ") == strings.TrimPrefix(where, "at ") {
					t.Fatalf("the library did not move: %q (was %q)", reply, where)
				}
			}
			if tc.again {
				if got := probe(t, proc, "listen 65616"); got != "listening on 80" {
					t.Fatalf("the reloaded library answered %q; want the original code back", got)
				}
			}
			st, err := Status(pid)
			if err != nil || len(st) != 1 || st[0].State != StateLost {
				t.Fatalf("Status after %s = %+v, %v; want one patch in state %q", tc.reload, st, err, StateLost)
			}

			if !tc.again {
				var mm *BuildIDMismatchError
				if _, err := Apply(pid, p, opts); !errors.As(err, &mm) {
					t.Errorf("Apply with the library gone: %v, want a *BuildIDMismatchError", err)
				}
				res, err := Revert(pid, p.ID, 0)
				if err != nil {
					t.Fatalf("Revert of the lost patch: %v", err)
				}
				if !res.WasLost || res.Functions != 0 {
					t.Errorf("Revert result %+v; want WasLost and no redirect taken out", res)
				}
				if n := patchMappings(t, pid); n != 0 {
					t.Errorf("%d patch mappings left after the revert", n)
				}
				if got := probe(t, proc, "listen 8080"); got != "no library" {
					t.Errorf("process answered %q after the revert", got)
				}
				return
			}

			res, err := Apply(pid, p, opts)
			if err != nil {
				t.Fatalf("Apply of the lost patch: %v", err)
			}
			if !res.WasLost || res.Functions != 1 {
				t.Errorf("Apply result %+v; want WasLost and 1 function", res)
			}
			if got := probe(t, proc, "listen 65616"); got != "invalid port" {
				t.Errorf("applied again, the library answered %q", got)
			}
			if st, err := Status(pid); err != nil || len(st) != 1 || st[0].State != StateApplied {
				t.Errorf("Status after applying again = %+v, %v", st, err)
			}
			if n := patchMappings(t, pid); n != 1 {
				t.Errorf("%d patch mappings after applying again; the lost one must be gone", n)
			}
			if _, err := Apply(pid, p, opts); !errors.Is(err, ErrAlreadyApplied) {
				t.Errorf("third Apply: %v, want ErrAlreadyApplied", err)
			}
			if _, err := Revert(pid, p.ID, 0); err != nil {
				t.Fatal(err)
			}
			if got := probe(t, proc, "listen 65616"); got != "listening on 80" {
				t.Errorf("reverted, the library answered %q", got)
			}
		})
	}
}

// TestLostRevert: reverting a patch lost to a reload cleans up its mapping
// and leaves the library's code (its original, loaded again) as it is.
func TestLostRevert(t *testing.T) {
	proc, p, pub := reloadTarget(t)
	pid := proc.Pid()
	pristine := moduleText(t, pid, p)
	if _, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(probe(t, proc, "reload"), "reloaded at ") {
		t.Fatal("reload failed")
	}
	res, err := Revert(pid, p.ID, 0)
	if err != nil {
		t.Fatalf("Revert of a lost patch: %v", err)
	}
	if !res.WasLost || res.Functions != 0 {
		t.Errorf("Revert result %+v; want WasLost and no redirect taken out", res)
	}
	if got := moduleText(t, pid, p); !bytes.Equal(got, pristine) {
		t.Errorf("Revert wrote into the reloaded library's code")
	}
	if n := patchMappings(t, pid); n != 0 {
		t.Errorf("%d patch mappings left", n)
	}
	if st, err := Status(pid); err != nil || len(st) != 0 {
		t.Errorf("Status after the revert = %+v, %v", st, err)
	}
	if got := probe(t, proc, "listen 65616"); got != "listening on 80" {
		t.Errorf("process answered %q", got)
	}
}

// TestLostBusy: a lost patch whose code a thread still runs (a thread
// blocks for good in the patch's wait_here when its redirect disappears)
// cannot be unmapped; Apply keeps it mapped, no longer carried, and
// applies afresh.
func TestLostBusy(t *testing.T) {
	orig, fixed, err := fixture.CompilePair("hang", "testdata/hang", "hang.c", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "hang-fix"})
	proc := fixture.Start(t, orig)
	if got := probe(t, proc, "ping"); got != "pong 0 0" {
		t.Fatalf("ping: %q", got)
	}
	pid := proc.Pid()
	opts := Options{Trusted: []patch.PublicKey{pub}, Timeout: 200 * time.Millisecond}
	if _, err := Apply(pid, p, opts); err != nil {
		t.Fatal(err)
	}
	// A thread enters the patch's wait_here and stays there.
	probe(t, proc, "hang")
	for i := 0; probe(t, proc, "ping") != "pong 1 1"; i++ {
		if i == 1000 {
			t.Fatal("the thread does not enter wait_here")
		}
		time.Sleep(time.Millisecond)
	}
	// What a reload of the module at the same address does: the entry
	// holds its original bytes again.
	tg, a := onlyRecord(t, pid)
	for _, rd := range a.rec.Redirects {
		if err := tg.mem.Poke(rd.Old, rd.Site); err != nil {
			t.Fatal(err)
		}
	}
	tg.close()
	if st, err := Status(pid); err != nil || len(st) != 1 || st[0].State != StateLost {
		t.Fatalf("Status = %+v, %v; want lost", st, err)
	}
	opts.Timeout = 5 * time.Second // the cleanup waits less
	res, err := Apply(pid, p, opts)
	if err != nil {
		t.Fatalf("Apply of a lost patch still running: %v", err)
	}
	if !res.WasLost {
		t.Errorf("Apply result %+v; want WasLost", res)
	}
	if st, err := Status(pid); err != nil || len(st) != 1 || st[0].State != StateApplied {
		t.Errorf("Status = %+v, %v; want one applied", st, err)
	}
	if n := patchMappings(t, pid); n != 2 {
		t.Errorf("%d patch mappings; want the new one and the busy old one", n)
	}
	if got := probe(t, proc, "ping"); got != "pong 1 1" {
		t.Errorf("ping: %q", got)
	}
}
