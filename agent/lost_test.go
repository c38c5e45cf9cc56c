package agent

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/server/api"
)

// TestAgentLostPatch: a patched library unloaded and loaded again (a
// plugin's graceful restart) comes back with its original code, at the
// same address or another. A rescan notices that the patch is lost
// (patch_lost) and applies it again (the engine cleans the stale mapping
// and record): the process answers as fixed, with one record. A library
// unloaded for good leaves a lost patch, reported as such, and the
// inventory sent to the server says "lost" (not protected).
func TestAgentLostPatch(t *testing.T) {
	fx, err := fixture.Load("shared_lib")
	if err != nil {
		t.Fatal(err)
	}
	o, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	f, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	host, err := fixture.Compile("dlreload", []string{filepath.Join(fixture.Root(), "testdata", "fixtures", "dlreload", "host.c")}, "-O2", "-ldl")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, cmd string
		again     bool // the library is there to patch again
	}{
		{"same address", "reload", true},
		{"new address", "move", true},
		{"unloaded", "unload", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			cfg, _ := withPatch(t, h, o.Lib, f.Lib, "svc-port")
			p, pid := h.start(t, host, o.Lib)
			startAgent(t, cfg)
			waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pid))
			if got, _ := p.Probe("listen 65616"); got != "invalid port" {
				t.Fatalf("the patched library answered %q", got)
			}
			if got, err := p.Probe(tc.cmd); err != nil {
				t.Fatalf("%s: %q, %v", tc.cmd, got, err)
			}
			lost := waitEvent(t, cfg.StateDir, 30*time.Second, "patch_lost", is("patch_lost", pid))
			t.Logf("%s", lost)
			if !tc.again {
				if !strings.Contains(lost.Message, "not mapped") {
					t.Errorf("patch_lost says %q; want the target gone named", lost.Message)
				}
				inv, err := newInventorier(func(q int) bool { return q == pid }).build()
				if err != nil {
					t.Fatal(err)
				}
				want := []api.Applied{{ID: "svc-port", Version: lost.Version, State: "lost"}}
				if len(inv.Processes) != 1 || !slices.Equal(inv.Processes[0].Patches, want) {
					t.Errorf("inventory %+v; want the patch reported lost", inv.Processes)
				}
				return
			}
			waitFor(t, 30*time.Second, func() bool { return countEvents(cfg.StateDir, is("applied", pid)) == 2 }, "the patch applied again")
			if got, _ := p.Probe("listen 65616"); got != "invalid port" {
				t.Errorf("after the %s the library answered %q; want the fix back", tc.cmd, got)
			}
			if ids := applied(t, pid); !slices.Equal(ids, []string{"svc-port:applied"}) {
				t.Errorf("the process carries %v; want one applied record", ids)
			}
		})
	}
}
