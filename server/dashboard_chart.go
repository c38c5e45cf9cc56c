package server

import (
	"fmt"
	"html/template"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/store"
)

// chartSpan is how far back the exposure chart looks.
const chartSpan = 24 * time.Hour

// Geometry of the exposure chart (SVG user units; it scales to its box).
const (
	chartW, chartH                               = 720, 220
	chartLeft, chartRight, chartTop, chartBottom = 44, 12, 12, 28
	chartSeries                                  = 8 // colours in the stylesheet; more CVEs reuse them
)

// chart is the exposure chart: vulnerable devices per CVE over time, as
// steps (a count holds until the next sample), drawn server-side as SVG
// so it needs no script; its numbers are in a table beside it.
type chart struct {
	W, H        int
	Left, Right int
	Top, Bottom int
	Series      []chartLine
	XTicks      []chartTick
	YTicks      []chartTick
	From, To    time.Time
	Empty       bool
	Summary     string // the chart in one sentence, for screen readers
}

type chartLine struct {
	CVE    string
	Class  string // colour: series-0 … series-7
	Points string // SVG polyline points
	Now    int    // vulnerable devices now
	Peak   int
}

type chartTick struct {
	Pos   float64
	Label string
}

// exposureChart draws the samples since now-chartSpan, and now's counts.
func exposureChart(samples []store.ExposureSample, now []api.CVEReport, at time.Time) chart {
	c := chart{W: chartW, H: chartH, Left: chartLeft, Right: chartW - chartRight, Top: chartTop, Bottom: chartH - chartBottom, To: at}
	byCVE := map[string][]store.ExposureSample{}
	for _, s := range samples {
		byCVE[s.CVE] = append(byCVE[s.CVE], s)
	}
	for _, r := range now {
		byCVE[r.CVE] = append(byCVE[r.CVE], store.ExposureSample{Time: at, CVE: r.CVE, Vulnerable: r.Vulnerable, Protected: r.Protected, FixedOn: r.FixedOnDisk})
	}
	if len(byCVE) == 0 {
		c.Empty = true
		return c
	}
	c.From = at
	peak := 1
	for _, ss := range byCVE {
		for _, s := range ss {
			if s.Time.Before(c.From) {
				c.From = s.Time
			}
			peak = max(peak, s.Vulnerable)
		}
	}
	// A little room before the first sample, so its step shows.
	c.From = c.From.Add(-max(at.Sub(c.From)/10, time.Second))
	span := at.Sub(c.From).Seconds()
	x := func(t time.Time) float64 {
		return float64(c.Left) + float64(c.Right-c.Left)*t.Sub(c.From).Seconds()/span
	}
	y := func(v int) float64 {
		return float64(c.Bottom) - float64(c.Bottom-c.Top)*float64(v)/float64(peak)
	}
	cves := make([]string, 0, len(byCVE))
	for cve := range byCVE {
		cves = append(cves, cve)
	}
	sort.Strings(cves)
	var words []string
	for i, cve := range cves {
		ss := byCVE[cve]
		line := chartLine{CVE: cve, Class: fmt.Sprintf("series-%d", i%chartSeries)}
		var pts []string
		for j, s := range ss {
			if j > 0 { // a step: the previous count holds until this sample
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.Time), y(ss[j-1].Vulnerable)))
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.Time), y(s.Vulnerable)))
			line.Peak = max(line.Peak, s.Vulnerable)
		}
		if len(pts) == 1 { // one sample: a flat line to now
			pts = append([]string{fmt.Sprintf("%.1f,%.1f", x(c.From), y(ss[0].Vulnerable))}, pts...)
		}
		line.Points = strings.Join(pts, " ")
		line.Now = ss[len(ss)-1].Vulnerable
		c.Series = append(c.Series, line)
		words = append(words, fmt.Sprintf("%s: %d vulnerable now, at most %d", cve, line.Now, line.Peak))
	}
	c.Summary = "Vulnerable hosts per CVE since " + c.From.Format("Jan 2 15:04 MST") + ". " + strings.Join(words, "; ") + "."
	layout := "15:04"
	if span > 20*3600 {
		layout = "Jan 2 15:04"
	} else if span < 10*60 {
		layout = "15:04:05"
	}
	for i := 0; i <= 4; i++ {
		t := c.From.Add(time.Duration(float64(at.Sub(c.From)) * float64(i) / 4))
		label := t.Format(layout)
		if n := len(c.XTicks); n > 0 && c.XTicks[n-1].Label == label {
			continue // a span of seconds: one label a second
		}
		c.XTicks = append(c.XTicks, chartTick{Pos: x(t), Label: label})
	}
	step := int(math.Max(1, math.Ceil(float64(peak)/4)))
	for v := 0; v <= peak; v += step {
		c.YTicks = append(c.YTicks, chartTick{Pos: y(v), Label: fmt.Sprint(v)})
	}
	return c
}

// templateFuncs are the helpers the dashboard's templates use.
var templateFuncs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"clock": func(t time.Time) string { return t.UTC().Format("15:04 UTC") },
	"ago": func(t, now time.Time) string {
		if t.IsZero() {
			return "never"
		}
		d := now.Sub(t)
		switch {
		case d < 0:
			return "in " + (-d).Round(time.Second).String()
		case d < 5*time.Second:
			return "just now"
		case d < time.Minute:
			return fmt.Sprintf("%d s ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%d min ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%d h ago", int(d.Hours()))
		}
		return fmt.Sprintf("%d days ago", int(d.Hours()/24))
	},
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"size": func(n int) string {
		switch {
		case n < 1024:
			return fmt.Sprintf("%d B", n)
		case n < 1<<20:
			return fmt.Sprintf("%.1f KiB", float64(n)/1024)
		}
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	},
	"join":  strings.Join,
	"human": func(s string) string { return strings.ReplaceAll(s, "_", " ") },
	"dur": func(d time.Duration) string {
		if d == 0 {
			return "none"
		}
		return d.String()
	},
	"pct":  func(f float64) string { return fmt.Sprintf("%.2f", f) },
	"plus": func(a, b float64) float64 { return a + b },
	"query": func(kv ...string) template.URL { // the event log with these filters
		var b strings.Builder
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(kv[i] + "=" + template.URLQueryEscaper(kv[i+1]))
		}
		return template.URL("/ui/events?" + b.String())
	},
}
