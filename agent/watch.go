package agent

import (
	"context"
	"errors"
	"time"

	"github.com/hotpatch/hotpatch/internal/kmsg"
	"github.com/hotpatch/hotpatch/internal/procevents"
)

// watchProcesses follows the kernel's process events: execs (to patch new
// programs within milliseconds) and exits (to notice crashes). Without
// them (no CAP_NET_ADMIN, an old kernel) the agent still works from its
// rescans, and says so.
func (a *Agent) watchProcesses(ctx context.Context) (execs <-chan int, exits <-chan exitInfo, lost <-chan struct{}) {
	ec := make(chan int, 1024)
	xc := make(chan exitInfo, 1024)
	lc := make(chan struct{}, 1)
	l, err := procevents.Listen()
	if err != nil {
		a.log.add(Event{Type: "events_lost", Error: err.Error(), Message: "process events unavailable; new processes are found by rescans only"})
		return ec, xc, lc
	}
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	go func() {
		for {
			evs, err := l.Read()
			if errors.Is(err, procevents.ErrOverrun) {
				select {
				case lc <- struct{}{}:
				default:
				}
				continue
			}
			if err != nil {
				return
			}
			for _, e := range evs {
				// Only the process (thread group leader) matters.
				if e.PID != e.TGID {
					continue
				}
				switch e.Kind {
				case procevents.Exec:
					select {
					case ec <- e.PID:
					case <-ctx.Done():
						return
					}
				case procevents.Exit:
					sig, core := e.Signal()
					select {
					case xc <- exitInfo{PID: e.PID, Signal: sig, Core: core}:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	return ec, xc, lc
}

// watchFaults reads the kernel log's fault reports (segfault at ADDR ip
// IP …) into a.faults, so a crash event can say where it happened.
func (a *Agent) watchFaults(ctx context.Context) {
	r, err := kmsg.Open()
	if err != nil {
		return // crash events then carry the signal only
	}
	go func() {
		<-ctx.Done()
		r.Close()
	}()
	go func() {
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			a.faultMu.Lock()
			a.faults[f.PID] = fault{PID: f.PID, Kind: f.Kind, Addr: f.Addr, IP: f.IP, When: time.Now()}
			if len(a.faults) > 4096 {
				for pid, old := range a.faults {
					if time.Since(old.When) > time.Minute {
						delete(a.faults, pid)
					}
				}
			}
			a.faultMu.Unlock()
		}
	}()
}
