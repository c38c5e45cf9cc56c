package server

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/store"
)

// benchFleet fills a server's store with n devices, each running the
// patch's target in one of four processes, a quarter of them patched,
// and one running rollout; it returns a signed-in web client.
func benchFleet(b *testing.B, n int) (*Server, *web) {
	b.Helper()
	s, err := New(Config{DataDir: b.TempDir(), Listen: "127.0.0.1:0", AnyPublisher: true, Tick: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ctx := context.Background()
	info := api.PatchInfo{SHA256: strings.Repeat("ab", 32), ID: "bounds-fix", Version: 1, CVEs: []string{"CVE-2026-0001"},
		TargetName: "bounds", TargetBuildID: "00aa", Functions: []string{"set"}, Published: time.Now()}
	if err := s.st.AddPatch(ctx, info, []byte("x")); err != nil {
		b.Fatal(err)
	}
	members := []string{}
	for i := range n {
		d := store.Device{Serial: fmt.Sprint(i)}
		d.ID, d.Name, d.Hostname, d.Labels, d.Enrolled = fmt.Sprintf("dev-%06d", i), fmt.Sprintf("host-%05d", i), "h", map[string]string{"ring": "broad"}, time.Now()
		if err := s.st.AddDevice(ctx, d); err != nil {
			b.Fatal(err)
		}
		inv := api.Inventory{Hostname: "h", Kernel: "6.18"}
		for p := range 4 {
			proc := api.Process{PID: 100 + p, Exe: "/usr/bin/svc", Modules: []api.Module{{Path: "/usr/lib/libc.so.6", BuildID: "11bb"}}}
			if p == 0 {
				proc.Modules = append(proc.Modules, api.Module{Path: "/usr/bin/bounds", BuildID: "00aa"})
				if i%4 == 0 {
					proc.Patches = []api.Applied{{ID: "bounds-fix", Version: 1, State: "applied"}}
				}
			}
			inv.Processes = append(inv.Processes, proc)
		}
		if err := s.st.SetInventory(ctx, d.ID, inv, time.Now()); err != nil {
			b.Fatal(err)
		}
		members = append(members, d.ID)
	}
	ro := store.Rollout{Members: map[string][]string{"broad": members}}
	ro.ID, ro.Patch, ro.State, ro.Created, ro.Updated = "ro-bench", info, api.StateRunning, time.Now(), time.Now()
	ro.Rings = []api.Ring{{Name: "broad", State: api.RingActive, Devices: n, Applied: n / 4, Pending: n - n/4, Started: time.Now()}}
	if err := s.st.AddRollout(ctx, ro); err != nil {
		b.Fatal(err)
	}
	w := newWeb(b, s)
	if st, _, _ := w.post("/ui/signin", map[string][]string{"token": {s.AdminToken()}}, nil); st != http.StatusSeeOther {
		b.Fatalf("sign in: HTTP %d", st)
	}
	return s, w
}

// BenchmarkDashboardPage: the time to render a page (over TLS, as a
// browser asks for it) for fleets of 100 and 1,000 devices. "changed":
// something changed before each rendering, so the fleet is read again
// (what the first open page pays on a live refresh); "shared": nothing
// changed (what every other open page pays for the same refresh).
func BenchmarkDashboardPage(b *testing.B) {
	for _, n := range []int{100, 1000} {
		s, w := benchFleet(b, n)
		for _, page := range []string{"/ui/", "/ui/rollouts/ro-bench", "/ui/hosts", "/ui/events"} {
			for _, changed := range []bool{true, false} {
				name := map[bool]string{true: "changed", false: "shared"}[changed]
				b.Run(fmt.Sprintf("devices=%d/page=%s/%s", n, page, name), func(b *testing.B) {
					for b.Loop() {
						if changed {
							s.st.AddEvent(context.Background(), api.AuditEvent{Actor: "server", Type: "bench"})
						}
						if st, _, body := w.get(page); st != 200 || len(body) < 500 {
							b.Fatalf("%s: HTTP %d", page, st)
						}
					}
				})
			}
		}
	}
}

// BenchmarkDashboardLive: from a device's inventory report to the
// "change" event on an open dashboard stream, for a change after a
// quiet second (150 ms of it is the coalescing of bursts, by design;
// under a steady stream of changes a page gets one event a second).
func BenchmarkDashboardLive(b *testing.B) {
	s, w := benchFleet(b, 10)
	dev, _ := enroll(b, s, "live", nil)
	w.http.Timeout = 0
	req, _ := http.NewRequest("GET", s.URL()+"/ui/stream", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := w.http.Do(req.WithContext(ctx))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				events <- name
			}
		}
		close(events)
	}()
	if e := <-events; e != "hello" {
		b.Fatalf("first event %q", e)
	}
	patched := false
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		time.Sleep(streamMinGap + 2*streamCoalesce) // an isolated change, not one of a burst
		for drained := false; !drained; {           // events of the last round's after-effects
			select {
			case <-events:
			default:
				drained = true
			}
		}
		b.StartTimer()
		patched = !patched
		dev.do("POST", api.PathDeviceReport, inventory("00aa", patched), nil)
		for e := range events {
			if e == "change" {
				break
			}
		}
	}
}
