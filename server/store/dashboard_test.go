package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotpatch/hotpatch/server/api"
)

// TestDashboardTables checks the dashboard's queries on SQLite and
// PostgreSQL: sessions expire and end, the event filters (and LIKE
// metacharacters in them, taken literally), paging back, exposure
// samples, and the version that moves with every change.
func TestDashboardTables(t *testing.T) {
	eachDB(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s, err := Open(url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()

		now := time.Now()
		live := Session{Hash: "h1", TokenHash: "t1", CSRF: "c1", Created: now, Expires: now.Add(time.Hour)}
		old := Session{Hash: "h0", TokenHash: "t1", CSRF: "c0", Created: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)}
		for _, se := range []Session{old, live} {
			if err := s.AddSession(ctx, se); err != nil {
				t.Fatal(err)
			}
		}
		if got, err := s.Session(ctx, "h1"); err != nil || got.TokenHash != "t1" || got.CSRF != "c1" {
			t.Errorf("session h1: %+v, %v", got, err)
		}
		if _, err := s.Session(ctx, "h0"); err != ErrNotFound {
			t.Errorf("an expired session: %v, want not found", err)
		}
		if err := s.DeleteSession(ctx, "h1"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Session(ctx, "h1"); err != ErrNotFound {
			t.Errorf("a session after sign-out: %v, want not found", err)
		}

		for _, d := range []Device{{Serial: "s2"}, {Serial: "s1"}} {
			d.ID, d.Name, d.Enrolled = "dev-"+d.Serial, "host-"+d.Serial, now
			if err := s.AddDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
		names, err := s.DeviceNames(ctx)
		if err != nil || len(names) != 2 || names[0].Name != "host-s1" || names[1].ID != "dev-s2" {
			t.Errorf("device names: %+v, %v", names, err)
		}

		v0, err := s.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		evs := []api.AuditEvent{
			{Actor: "token:admin", Type: "rollout_started", Rollout: "ro-1", Patch: "p", Message: "rings canary"},
			{Actor: "device:dev-1", Type: "applied", Device: "dev-1", Patch: "p", Message: "pid 7: 100% done"},
			{Actor: "device:dev-2", Type: "applied", Device: "dev-2", Patch: "p", Message: "pid 9: done"},
			{Actor: "server", Type: "rollout_halted", Rollout: "ro-1", Patch: "p", Message: "ring canary: budget"},
		}
		for _, e := range evs {
			if _, err := s.AddEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		if v1, _ := s.Version(ctx); v1 == v0 {
			t.Errorf("version did not move with new events: %s", v1)
		}
		find := func(f EventFilter) []string {
			t.Helper()
			got, err := s.FindEvents(ctx, f)
			if err != nil {
				t.Fatalf("%+v: %v", f, err)
			}
			var out []string
			for _, e := range got {
				out = append(out, e.Actor)
			}
			return out
		}
		for _, c := range []struct {
			f    EventFilter
			want []string
		}{
			{EventFilter{}, []string{"server", "device:dev-2", "device:dev-1", "token:admin"}},
			{EventFilter{Type: "applied"}, []string{"device:dev-2", "device:dev-1"}},
			{EventFilter{Device: "dev-1"}, []string{"device:dev-1"}},
			{EventFilter{Rollout: "ro-1"}, []string{"server", "token:admin"}},
			{EventFilter{Actor: "device:"}, []string{"device:dev-2", "device:dev-1"}},
			{EventFilter{Actor: "server"}, []string{"server"}},
			{EventFilter{Text: "BUDGET"}, []string{"server"}},
			{EventFilter{Text: "100%"}, []string{"device:dev-1"}}, // % is a character here, not a wildcard
			{EventFilter{Text: "_"}, nil},
			{EventFilter{Limit: 2}, []string{"server", "device:dev-2"}},
		} {
			if diff := cmp.Diff(c.want, find(c.f)); diff != "" {
				t.Errorf("filter %+v (-want +got):\n%s", c.f, diff)
			}
		}
		page, _ := s.FindEvents(ctx, EventFilter{Limit: 2})
		if diff := cmp.Diff([]string{"device:dev-1", "token:admin"}, find(EventFilter{Before: page[1].Seq})); diff != "" {
			t.Errorf("the page before seq %d (-want +got):\n%s", page[1].Seq, diff)
		}
		types, err := s.EventTypes(ctx)
		if diff := cmp.Diff([]string{"applied", "rollout_halted", "rollout_started"}, types); err != nil || diff != "" {
			t.Errorf("event types (-want +got):\n%s %v", diff, err)
		}

		t1, t2 := now.Add(-time.Minute).UTC().Truncate(time.Microsecond), now.UTC().Truncate(time.Microsecond)
		if err := s.AddExposure(ctx, t1, []api.CVEReport{{CVE: "CVE-1", Vulnerable: 3}, {CVE: "CVE-2", Vulnerable: 1, Protected: 1}}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddExposure(ctx, t2, []api.CVEReport{{CVE: "CVE-1", Vulnerable: 1, Protected: 2, FixedOnDisk: 1}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Exposure(ctx, now.Add(-time.Hour))
		want := []ExposureSample{
			{Time: t1, CVE: "CVE-1", Vulnerable: 3},
			{Time: t1, CVE: "CVE-2", Vulnerable: 1, Protected: 1},
			{Time: t2, CVE: "CVE-1", Vulnerable: 1, Protected: 2, FixedOn: 1},
		}
		if diff := cmp.Diff(want, got); err != nil || diff != "" {
			t.Errorf("exposure (-want +got):\n%s %v", diff, err)
		}
		if got, _ := s.Exposure(ctx, t1); len(got) != 1 {
			t.Errorf("exposure after the first sample: %d samples, want 1", len(got))
		}
		if err := s.PruneExposure(ctx, t2); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Exposure(ctx, time.Time{}); len(got) != 1 || !got[0].Time.Equal(t2) {
			t.Errorf("after pruning the samples before the second: %+v", got)
		}
	})
}
