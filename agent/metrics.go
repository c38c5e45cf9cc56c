package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// metrics are the agent's Prometheus metrics, written in the text
// exposition format by hand (a handful of series do not need a client
// library; see docs/DEPENDENCIES.md).
type metrics struct {
	a *Agent

	mu            sync.Mutex
	processes     int
	rollbacks     int
	probeFailures int
	fallbacks     int
	applySeconds  []float64 // recent apply durations
	snapshot      string    // the last rendering, made on the agent's goroutine
}

func newMetrics(a *Agent) *metrics { return &metrics{a: a} }

func (m *metrics) applyLatency(d time.Duration) {
	m.applySeconds = append(m.applySeconds, d.Seconds())
	if len(m.applySeconds) > 1000 {
		m.applySeconds = m.applySeconds[len(m.applySeconds)-1000:]
	}
}

// render writes the metrics; it runs on the agent's goroutine (which owns
// the counters) and leaves the text for the HTTP handler.
func (m *metrics) render() {
	var b strings.Builder
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", name, help, name, name, v)
	}
	counter := func(name, help string, v int) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge("hotpatchd_patches_desired", "Patches in the patch directory that verified.", float64(len(m.a.desired)))
	gauge("hotpatchd_patches_bad", "Patches kept off this host after a crash or a failed probe.", float64(len(m.a.st.Bad)))
	gauge("hotpatchd_processes", "Processes in the agent's scope.", float64(m.processes))
	gauge("hotpatchd_watches", "Patched processes under health watch.", float64(len(m.a.st.Watches)))
	counter("hotpatchd_rollbacks_total", "Patches marked bad and rolled back.", m.rollbacks)
	counter("hotpatchd_probe_failures_total", "Failed health probes.", m.probeFailures)
	counter("hotpatchd_fallbacks_total", "Restart commands run for processes that could not be patched.", m.fallbacks)
	fmt.Fprintf(&b, "# HELP hotpatchd_events_total Events recorded, by type.\n# TYPE hotpatchd_events_total counter\n")
	counts := m.a.log.counts()
	types := make([]string, 0, len(counts))
	for t := range counts {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		fmt.Fprintf(&b, "hotpatchd_events_total{type=%q} %d\n", t, counts[t])
	}
	if n := len(m.applySeconds); n > 0 {
		s := append([]float64(nil), m.applySeconds...)
		sort.Float64s(s)
		fmt.Fprintf(&b, "# HELP hotpatchd_apply_seconds Duration of recent applies.\n# TYPE hotpatchd_apply_seconds summary\n")
		fmt.Fprintf(&b, "hotpatchd_apply_seconds{quantile=\"0.5\"} %g\nhotpatchd_apply_seconds{quantile=\"0.99\"} %g\n", s[n/2], s[n*99/100])
		sum := 0.0
		for _, v := range s {
			sum += v
		}
		fmt.Fprintf(&b, "hotpatchd_apply_seconds_sum %g\nhotpatchd_apply_seconds_count %d\n", sum, n)
	}
	m.mu.Lock()
	m.snapshot = b.String()
	m.mu.Unlock()
}

// serve listens on addr (loopback only) and serves /metrics.
func (m *metrics) serve(addr string) (stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("metrics address %q: listen on a loopback address (127.0.0.1:PORT); put a proxy in front to expose it", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		s := m.snapshot
		m.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, s)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.a.log.add(Event{Type: "metrics_failed", Error: err.Error()})
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
