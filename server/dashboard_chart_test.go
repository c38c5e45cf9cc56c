package server

import (
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/store"
)

// TestExposureChart: each CVE is a step line (a count holds until the
// next sample), ending at now's count; the axis labels are distinct; the
// summary says it in words; no CVE, no chart.
func TestExposureChart(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	samples := []store.ExposureSample{
		{Time: now.Add(-30 * time.Minute), CVE: "CVE-B", Vulnerable: 4},
		{Time: now.Add(-20 * time.Minute), CVE: "CVE-B", Vulnerable: 2},
		{Time: now.Add(-10 * time.Minute), CVE: "CVE-A", Vulnerable: 1},
	}
	c := exposureChart(samples, []api.CVEReport{{CVE: "CVE-A", Vulnerable: 0}, {CVE: "CVE-B", Vulnerable: 2}}, now)
	if c.Empty || len(c.Series) != 2 || c.Series[0].CVE != "CVE-A" || c.Series[1].CVE != "CVE-B" {
		t.Fatalf("series %+v", c.Series)
	}
	b := c.Series[1]
	if b.Now != 2 || b.Peak != 4 || b.Class != "series-1" {
		t.Errorf("CVE-B: %+v", b)
	}
	// Samples 4, 2 and now 2: points (t0,4) (t1,4) (t1,2) (now,2) (now,2).
	pts := strings.Fields(b.Points)
	if len(pts) != 5 {
		t.Fatalf("CVE-B points %q", b.Points)
	}
	y := func(p string) string { return p[strings.IndexByte(p, ',')+1:] }
	x := func(p string) string { return p[:strings.IndexByte(p, ',')] }
	if y(pts[0]) != y(pts[1]) || x(pts[1]) != x(pts[2]) || y(pts[2]) != y(pts[4]) || y(pts[0]) == y(pts[2]) {
		t.Errorf("CVE-B is not drawn as steps: %q", b.Points)
	}
	if top := y(pts[0]); top != "12.0" {
		t.Errorf("the peak (4) is at y=%s, want the top of the plot (12.0)", top)
	}
	if !strings.Contains(c.Summary, "CVE-A: 0 vulnerable now, at most 1") || !strings.Contains(c.Summary, "CVE-B: 2 vulnerable now, at most 4") {
		t.Errorf("summary %q", c.Summary)
	}
	seen := map[string]bool{}
	for _, tk := range c.XTicks {
		if seen[tk.Label] {
			t.Errorf("axis label %q twice", tk.Label)
		}
		seen[tk.Label] = true
	}
	// A span of seconds.
	short := exposureChart([]store.ExposureSample{{Time: now.Add(-2 * time.Second), CVE: "CVE-A", Vulnerable: 1}}, nil, now)
	seen = map[string]bool{}
	for _, tk := range short.XTicks {
		if seen[tk.Label] {
			t.Errorf("short span: axis label %q twice", tk.Label)
		}
		seen[tk.Label] = true
	}
	if e := exposureChart(nil, nil, now); !e.Empty {
		t.Errorf("no CVE: %+v", e)
	}
}
