package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/server/api"
)

// TestFleetRings: three simulated hosts (PID namespaces, one enrolled
// agent each: one canary, two broad) and one server. A good patch moves
// canary → broad and lands on every host, and the CVE report counts the
// three protected; a bad patch (it crashes its target) is halted at
// canary: the crash on the canary host exceeds the failure budget, the
// server tells the canary to revert, and the broad hosts never get it.
func TestFleetRings(t *testing.T) {
	t.Parallel()
	needRoot(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	f := newFleet(t, dir, pub)
	ctx := context.Background()

	goodOrig, goodFixed := boundsCheck(t)
	good := signedWith(t, goodOrig, goodFixed, builder.Options{ID: "bounds-fix", CVEs: []string{"CVE-2026-0001"}}, key)
	badOrig, badFixed := crashy(t)
	_, bad := signed(t, badOrig, badFixed, "crashy-fix", key)

	type hostAgent struct {
		h     *host
		state string
		bound *fixture.Proc
		crash *fixture.Proc
		pids  [2]int
	}
	var hosts []*hostAgent
	for i, ring := range []string{"canary", "broad", "broad"} {
		h := newHost(t)
		hd := filepath.Join(dir, "host", ring+string(rune('a'+i)))
		cfg := f.enrolledConfig(hd, h, pub, map[string]string{"ring": ring})
		ha := &hostAgent{h: h, state: cfg.StateDir}
		ha.bound, ha.pids[0] = h.start(t, goodOrig)
		ha.crash, ha.pids[1] = h.start(t, badOrig)
		startAgent(t, cfg)
		hosts = append(hosts, ha)
	}
	waitFor(t, 30*time.Second, func() bool {
		ds, err := f.admin.Devices(ctx)
		if err != nil || len(ds) != 3 {
			return false
		}
		for _, d := range ds {
			if d.Processes == 0 {
				return false
			}
		}
		return true
	}, "three devices enrolled with their inventories")

	// The good patch: canary, then broad.
	info, err := f.admin.Publish(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := f.admin.StartRollout(ctx, api.RolloutRequest{Patch: info.SHA256, Rings: []string{"canary", "broad"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool {
		r, err := f.admin.Rollout(ctx, ro.ID)
		return err == nil && r.State == api.StateDone
	}, "the good rollout done")
	for _, ha := range hosts {
		if !answersFixed(t, ha.bound) {
			t.Errorf("host %s: the bound process does not answer as fixed", ha.h.ns)
		}
	}
	waitFor(t, 30*time.Second, func() bool {
		rep, err := f.admin.Report(ctx, "CVE-2026-0001")
		return err == nil && len(rep.CVEs) == 1 && rep.CVEs[0].Protected == 3 && rep.CVEs[0].Vulnerable == 0
	}, "the CVE report counting three hosts protected")

	// The bad patch: halted at canary.
	info, err = f.admin.Publish(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	// With a soak after canary, as a rollout of a new patch should have:
	// without one, the ring can end in the moment between the canary's
	// process dying (the inventory no longer shows it) and the crash
	// report arriving, and broad starts (the server then halts on the
	// late report, but broad got the patch meanwhile).
	ro, err = f.admin.StartRollout(ctx, api.RolloutRequest{Patch: info.SHA256, Rings: []string{"canary", "broad"}, MaxFailures: 0, Soak: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	canary := hosts[0]
	waitEvent(t, canary.state, 60*time.Second, "applied on the canary", func(e Event) bool { return e.Type == "applied" && e.Patch == "crashy-fix" })
	canary.crash.Probe("boom") // the patched function crashes
	testutil.Eventually(t, time.Minute, func() bool {
		r, err := f.admin.Rollout(ctx, ro.ID)
		return err == nil && r.State == api.StateHalted
	}, func() string {
		var b strings.Builder
		evs, _ := f.admin.Events(ctx, 0, 0)
		for _, e := range evs {
			fmt.Fprintf(&b, "audit: %+v\n", e)
		}
		r, _ := f.admin.Rollout(ctx, ro.ID)
		fmt.Fprintf(&b, "rollout: %+v\ncanary events:\n", r)
		ReadEvents(ctx, canary.state, false, func(e Event) error { b.WriteString(e.String() + "\n"); return nil })
		return b.String() + "the bad rollout did not halt"
	})
	r, _ := f.admin.Rollout(ctx, ro.ID)
	if r.Rings[1].State != api.RingPending {
		t.Errorf("broad ring %s; it must never start", r.Rings[1].State)
	}
	for _, ha := range hosts[1:] {
		if n := countEvents(ha.state, func(e Event) bool { return e.Type == "applied" && e.Patch == "crashy-fix" }); n != 0 {
			t.Errorf("a broad host applied the bad patch %d times", n)
		}
	}
	t.Logf("halted: %s", r.Reason)
}

// signedWith builds and signs a patch with build options (CVEs, …).
func signedWith(t *testing.T, orig, fixed string, opts builder.Options, key patch.PrivateKey) []byte {
	t.Helper()
	return testutil.SignedPatch(t, orig, fixed, opts, key).File
}
