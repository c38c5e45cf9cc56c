package engine

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

func reportPercentiles(b *testing.B, name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds()), name+"-p50-µs")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), name+"-p99-µs")
}

// BenchmarkStopWorld measures the pause of stopping every thread of a
// process and letting it go, by thread count: the floor of any apply. The
// pause runs from the first thread asked to stop to the last one let go.
// "service": every worker blocked in read() but one spinning; "cpu-bound":
// half the workers spinning, more runnable threads than this machine has
// CPUs, so each must wait for a time slice to take the stop.
func BenchmarkStopWorld(b *testing.B) {
	for _, shape := range []string{"service", "cpu-bound"} {
		for _, n := range []int{1, 8, 64, 512} {
			b.Run(fmt.Sprintf("%s/threads=%d", shape, n), func(b *testing.B) {
				spin := "STOPME_SPINNERS=" + strconv.Itoa(min(1, n-1))
				if shape == "cpu-bound" {
					spin = "STOPME_SPINNERS=" + strconv.Itoa((n-1)/2)
				}
				p := stopme(b, n-1, spin)
				var pauses []time.Duration
				for b.Loop() {
					w := newWorld(p.Pid())
					err := w.critical(func() error {
						tids, err := threads(p.Pid())
						if err == nil {
							err = w.seizeLocked(tids)
						}
						if err == nil {
							err = w.stopLocked(nil)
						}
						pauses = append(pauses, w.releaseLocked())
						return err
					})
					w.tr.close()
					if err != nil {
						b.Fatal(err)
					}
				}
				reportPercentiles(b, "pause", pauses)
			})
		}
	}
}

// BenchmarkApply measures apply and revert of a real patch on the
// multithreaded fixture (5 threads, under no load): the whole call, and the
// pause during which every thread is stopped.
func BenchmarkApply(b *testing.B) {
	for _, name := range []string{"multithreaded", "uaf_guard"} {
		b.Run(name, func(b *testing.B) {
			fx, err := fixture.Load(name)
			if err != nil {
				b.Fatal(err)
			}
			p, pub, orig := signedPatch(b, fx, fx.DefaultFlags())
			proc := fixture.Start(b, orig.Program)
			if err := proc.WaitIdle(); err != nil {
				b.Fatal(err)
			}
			var applyT, pauses []time.Duration
			for b.Loop() {
				start := time.Now()
				res, err := Apply(proc.Pid(), p, Options{Trusted: []patch.PublicKey{pub}})
				if err != nil {
					b.Fatal(err)
				}
				applyT = append(applyT, time.Since(start))
				pauses = append(pauses, res.Paused)
				if _, err := Revert(proc.Pid(), p.ID, 0); err != nil {
					b.Fatal(err)
				}
			}
			reportPercentiles(b, "apply", applyT)
			reportPercentiles(b, "pause", pauses)
		})
	}
}

// BenchmarkPause is the figure of the engine issue: the pause of an apply
// and of a revert of a 3-function patch on an 8-thread process shaped like
// a service (a pool waiting on a condition variable, timer threads waking
// every millisecond, an I/O thread in poll, main reading stdin). The pause
// runs from the first thread asked to stop to the last one let go.
func BenchmarkPause(b *testing.B) {
	orig, fixed, err := fixture.CompilePair("pause", "testdata/pause", "pause.c", "-pthread")
	if err != nil {
		b.Fatal(err)
	}
	p, pub := signedPatchFrom(b, orig, fixed, builder.Options{ID: "pause-fix"})
	if n := len(p.Functions); n != 3 {
		b.Fatalf("patch has %d functions, want 3", n)
	}
	proc := fixture.Start(b, orig)
	if got, err := proc.Probe("req 5"); err != nil || got != "amount=5 ok=1" {
		b.Fatalf("first request: %q, %v", got, err)
	}
	if n, _ := threads(proc.Pid()); len(n) != 8 {
		b.Fatalf("%d threads, want 8", len(n))
	}
	var applyT, applyP, revertP []time.Duration
	for b.Loop() {
		start := time.Now()
		res, err := Apply(proc.Pid(), p, Options{Trusted: []patch.PublicKey{pub}})
		if err != nil {
			b.Fatal(err)
		}
		applyT = append(applyT, time.Since(start))
		applyP = append(applyP, res.Paused)
		res, err = Revert(proc.Pid(), p.ID, 0)
		if err != nil {
			b.Fatal(err)
		}
		revertP = append(revertP, res.Paused)
	}
	if got, err := proc.Probe("req 5"); err != nil || got != "amount=5 ok=1" {
		b.Fatalf("last request: %q, %v", got, err)
	}
	reportPercentiles(b, "apply", applyT)
	reportPercentiles(b, "apply-pause", applyP)
	reportPercentiles(b, "revert-pause", revertP)
}
