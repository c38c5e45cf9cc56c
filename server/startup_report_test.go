package server

import (
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/store"
)

// TestReportStartupOnly checks that a device whose processes carry a
// start-up-only patch is reported as restart_needed (and vulnerable), never
// as protected, while a rollout still counts the patch as applied there.
func TestReportStartupOnly(t *testing.T) {
	t.Parallel()
	build := "00aa11bb"
	dev := func(id string, patched bool) store.Device {
		proc := api.Process{PID: 10, Exe: "/usr/sbin/kvd", Modules: []api.Module{{Path: "/usr/sbin/kvd", BuildID: build}}}
		if patched {
			proc.Patches = []api.Applied{{ID: "kv-fix", Version: 1, State: "applied"}}
		}
		return store.Device{Device: api.Device{ID: id, Name: id}, Inventory: api.Inventory{Processes: []api.Process{proc}}, InventoryAt: time.Now()}
	}
	devices := []store.Device{dev("a", true), dev("b", false)}
	for _, tt := range []struct {
		startupOnly                    bool
		vulnerable, restart, protected int
		stateA                         string
	}{
		{false, 1, 0, 1, "protected"},
		{true, 2, 1, 0, "restart_needed"},
	} {
		p := api.PatchInfo{ID: "kv-fix", Version: 1, CVEs: []string{"CVE-2026-0042"}, TargetBuildID: build, StartupOnly: tt.startupOnly}
		rep := cveReport([]api.PatchInfo{p}, devices, "CVE-2026-0042")
		if len(rep.CVEs) != 1 {
			t.Fatalf("report %+v", rep)
		}
		c := rep.CVEs[0]
		if c.Vulnerable != tt.vulnerable || c.NeedRestart != tt.restart || c.Protected != tt.protected {
			t.Errorf("startup-only %v: vulnerable %d, restart_needed %d, protected %d; want %d, %d, %d",
				tt.startupOnly, c.Vulnerable, c.NeedRestart, c.Protected, tt.vulnerable, tt.restart, tt.protected)
		}
		if len(c.Devices) != 2 || c.Devices[0].State != tt.stateA || c.Devices[1].State != "vulnerable" {
			t.Errorf("startup-only %v: device lines %+v, want a %s", tt.startupOnly, c.Devices, tt.stateA)
		}
		if st := memberState(devices[0], p, time.Now().Add(-time.Minute), false); st != memberApplied {
			t.Errorf("startup-only %v: rollout member state %s, want %s", tt.startupOnly, st, memberApplied)
		}
		rows := hostRows(devices[:1], []api.PatchInfo{p}, time.Now())
		if tt.startupOnly && (len(rows[0].Protected) != 0 || len(rows[0].Vulnerable) != 1) {
			t.Errorf("dashboard host row %+v: a start-up-only patch must not show as protected", rows[0])
		}
	}
}
