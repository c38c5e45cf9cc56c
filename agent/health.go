package agent

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hotpatch/hotpatch/engine"
)

// fault is the kernel's report of a fault in a process (from its log).
type fault struct {
	PID      int
	Kind     string
	Addr, IP uint64
	When     time.Time
}

// exitInfo is a process's end, as the kernel's process events report it.
type exitInfo struct {
	PID    int
	Signal syscall.Signal // the fatal signal, 0 for a normal exit
	Core   bool
}

type probeResult struct {
	pid   int
	patch string
	probe string
	err   error
}

func (a *Agent) startWatch(pid int, start uint64, id string, code []engine.FuncInfo) {
	a.stopWatch(pid, id)
	now := time.Now()
	w := watch{PID: pid, Start: start, Patch: id, Applied: now, Until: now.Add(a.cfg.Health.Window.D()), Code: code}
	// Where the patch is mapped, to charge a crash to the patch whose
	// code it happened in (the process is gone when its exit is read).
	if maps, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps"); err == nil {
		for _, r := range patchRanges(maps) {
			if r.id == id {
				w.Mapped = append(w.Mapped, [2]uint64{r.start, r.end})
			}
		}
	}
	a.st.Watches = append(a.st.Watches, w)
	a.save()
}

func (a *Agent) stopWatch(pid int, id string) {
	kept := a.st.Watches[:0]
	for _, w := range a.st.Watches {
		if w.PID != pid || w.Patch != id {
			kept = append(kept, w)
		}
	}
	if len(kept) != len(a.st.Watches) {
		a.st.Watches = kept
		a.save()
	}
}

// fatal are the signals that mean a crash.
var fatal = map[syscall.Signal]bool{
	syscall.SIGSEGV: true, syscall.SIGBUS: true, syscall.SIGILL: true, syscall.SIGFPE: true,
	syscall.SIGABRT: true, syscall.SIGTRAP: true, syscall.SIGSYS: true,
}

// faultWait is how long a crash waits for the kernel's report of the
// fault, which can come a moment after the exit event.
const faultWait = 100 * time.Millisecond

// pendingCrash is a crash whose fault report is awaited.
type pendingCrash struct {
	exit  exitInfo
	hit   []watch
	until time.Time
}

// exited handles the end of a process: if it was under watch and died of
// a crash signal, the crash is charged to one of the patches it was
// watched for (see crashed). The kernel logs the fault details a moment
// after the exit event at times: the crash then waits for them (up to
// faultWait) without holding up the agent's loop (due checks it).
func (a *Agent) exited(e exitInfo) {
	delete(a.procs, e.PID)
	var hit []watch
	kept := a.st.Watches[:0]
	for _, w := range a.st.Watches {
		if w.PID == e.PID {
			hit = append(hit, w)
			continue
		}
		kept = append(kept, w)
	}
	if len(hit) == 0 {
		return
	}
	a.st.Watches = kept
	a.save()
	if !fatal[e.Signal] {
		return
	}
	pc := pendingCrash{exit: e, hit: hit, until: time.Now().Add(faultWait)}
	if a.hasFault(e.PID) || (e.Signal != syscall.SIGSEGV && e.Signal != syscall.SIGBUS && e.Signal != syscall.SIGILL) {
		a.crashed(pc)
		return
	}
	a.crashes = append(a.crashes, pc)
}

// dueCrashes handles the crashes whose fault report came or whose wait is
// over; it returns when to look again (zero if none waits).
func (a *Agent) dueCrashes(now time.Time) time.Time {
	kept := a.crashes[:0]
	for _, pc := range a.crashes {
		if a.hasFault(pc.exit.PID) || !now.Before(pc.until) {
			a.crashed(pc)
			continue
		}
		kept = append(kept, pc)
	}
	a.crashes = kept
	if len(kept) == 0 {
		return time.Time{}
	}
	return now.Add(5 * time.Millisecond)
}

// crashed records a crash of a watched process and marks bad the one
// patch it is charged to: the patch whose code the faulting instruction
// was in; outside every watched patch's code (or where the kernel did not
// say), the most recent apply in that process. Other patches of the
// process are not charged: a healthy fix under a bad patch stacked on it
// must not be rolled back from the fleet with it.
func (a *Agent) crashed(pc pendingCrash) {
	e := pc.exit
	f, ok := a.fault(e.PID)
	charged, inCode := -1, false
	if ok && f.IP != 0 {
		for i, w := range pc.hit {
			if w.holds(f.IP) {
				charged, inCode = i, true
			}
		}
	}
	if charged < 0 {
		for i, w := range pc.hit {
			if charged < 0 || w.Applied.After(pc.hit[charged].Applied) {
				charged = i
			}
		}
	}
	w := pc.hit[charged]
	ev := Event{Type: "crash", PID: e.PID, Patch: w.Patch, Signal: signalName(e.Signal)}
	if ok {
		if f.Addr != 0 || f.Kind == "segfault" {
			ev.Fault = fmt.Sprintf("%#x", f.Addr)
		}
		ev.IP = fmt.Sprintf("%#x", f.IP)
		for _, fn := range w.Code {
			if f.IP >= fn.NewAddr && f.IP < fn.NewAddr+fn.NewSize {
				ev.Function = fn.Name
			}
		}
		if inCode {
			ev.Message = "in the patch's code"
		} else {
			ev.Message = "outside the patch's code"
		}
	}
	if len(pc.hit) > 1 {
		var others []string
		for i, o := range pc.hit {
			if i != charged {
				others = append(others, o.Patch)
			}
		}
		why := "the most recent apply in the process"
		if inCode {
			why = "the patch whose code it was in"
		}
		ev.Message = strings.TrimPrefix(ev.Message+"; charged to "+why+", not to "+strings.Join(others, ", "), "; ")
	}
	a.log.add(ev)
	a.markBad(w.Patch, e.PID, fmt.Sprintf("process %d died of %s within the health window", e.PID, ev.Signal))
}

// holds reports whether ip lies in the watched patch's mapping or code.
func (w watch) holds(ip uint64) bool {
	for _, r := range w.Mapped {
		if ip >= r[0] && ip < r[1] {
			return true
		}
	}
	for _, fn := range w.Code {
		if ip >= fn.NewAddr && ip < fn.NewAddr+fn.NewSize {
			return true
		}
	}
	return false
}

// hasFault reports whether the kernel reported a fault of pid.
func (a *Agent) hasFault(pid int) bool {
	a.faultMu.Lock()
	defer a.faultMu.Unlock()
	_, ok := a.faults[pid]
	return ok
}

// fault takes the kernel's fault report for pid, if it made one.
func (a *Agent) fault(pid int) (fault, bool) {
	a.faultMu.Lock()
	defer a.faultMu.Unlock()
	f, ok := a.faults[pid]
	delete(a.faults, pid)
	return f, ok
}

// markBad keeps a patch off this host: it is reverted from every process
// that has it and no longer applied to new ones, until its file changes.
// If /proc cannot be read to find those processes, the rollback stays
// pending (persisted) and every rescan tries again (sweepBad).
func (a *Agent) markBad(id string, pid int, reason string) {
	if _, already := a.st.Bad[id]; already {
		return
	}
	digest := ""
	if d := a.desired[id]; d != nil {
		digest = d.digest
	}
	a.st.Bad[id] = badPatch{Digest: digest, Reason: reason, PID: pid, Time: time.Now(), Pending: true}
	a.save()
	a.metrics.rollbacks++
	n, err := a.rollBack(id, pid, "rollback: "+reason)
	msg := fmt.Sprintf("%s; reverting it from %d other processes and keeping it off new ones", reason, n)
	if err != nil {
		msg = reason + "; keeping it off new processes; cannot tell which other processes carry it yet, so the revert from them waits until /proc can be read"
		a.alarm.failed("rollback of "+id, "the revert from the other processes is postponed", err)
	}
	a.log.add(Event{Type: "rolled_back", Patch: id, PID: pid, Digest: digest, Message: msg})
}

// rollBack submits the revert of a bad patch from every process in scope
// that carries it (but pid, which the caller handles) and clears its
// pending mark; it returns how many.
func (a *Agent) rollBack(id string, pid int, why string) (int, error) {
	pids, err := a.carriers(id)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pids {
		if p != pid {
			n++
			a.submit(job{kind: jobRevert, pid: p, id: id, why: why})
		}
	}
	if b, ok := a.st.Bad[id]; ok && b.Pending {
		b.Pending = false
		a.st.Bad[id] = b
		a.save()
	}
	return n, nil
}

// sweepBad finishes the rollbacks that could not find their processes
// when the patch was marked bad.
func (a *Agent) sweepBad() {
	for id, b := range a.st.Bad {
		if !b.Pending {
			continue
		}
		if _, err := a.rollBack(id, 0, "rollback: "+b.Reason); err != nil {
			a.alarm.failed("rollback of "+id, "the revert from the other processes is postponed", err)
			continue
		}
		a.alarm.ok("rollback of " + id)
	}
}

// checkWatches ends the health windows that are over and starts the
// probes that are due; it returns when it has work next.
func (a *Agent) checkWatches(now time.Time) (next time.Time) {
	changed := false
	kept := a.st.Watches[:0]
	for i := range a.st.Watches {
		w := &a.st.Watches[i]
		if now.After(w.Until) {
			changed = true
			continue
		}
		if start, ok := startTime(w.PID); !ok || start != w.Start {
			// Gone: its exit event, which tells a crash, may still be on
			// its way; drop the watch only if none came.
			if w.goneAt.IsZero() {
				w.goneAt = now
			}
			if now.Sub(w.goneAt) > 5*time.Second {
				changed = true
				continue
			}
			kept = append(kept, *w)
			if t := w.goneAt.Add(5 * time.Second); next.IsZero() || t.Before(next) {
				next = t
			}
			continue
		}
		if now.After(w.nextProbe) {
			a.runProbes(w)
			w.nextProbe = now.Add(a.probeInterval(w.Patch))
		}
		for _, t := range []time.Time{w.nextProbe, w.Until} {
			if next.IsZero() || t.Before(next) {
				next = t
			}
		}
		kept = append(kept, *w)
	}
	a.st.Watches = kept
	if changed {
		a.save()
	}
	return next
}

func (a *Agent) probeInterval(id string) time.Duration {
	d := time.Hour
	for _, p := range a.cfg.Health.Probes {
		if p.Patch == "" || p.Patch == "*" || p.Patch == id {
			d = min(d, p.Interval.D())
		}
	}
	return d
}

// runProbes starts, each in its own goroutine, the probes that apply to a
// watched process; failures come back through a.probed. A probe ends with
// the agent (its context derives from Run's).
func (a *Agent) runProbes(w *watch) {
	for _, p := range a.cfg.Health.Probes {
		if p.Patch != "" && p.Patch != "*" && p.Patch != w.Patch {
			continue
		}
		pid, id := w.PID, w.Patch
		go func() {
			ctx, cancel := context.WithTimeout(a.ctx, p.Timeout.D())
			defer cancel()
			r := probeResult{pid: pid, patch: id}
			if p.Command != "" {
				r.probe = p.Command
				cmd := shellCommand(ctx, p.Command, "HOTPATCH_PID="+strconv.Itoa(pid), "HOTPATCH_PATCH="+id)
				if out, err := cmd.CombinedOutput(); err != nil {
					if ctx.Err() != nil {
						err = fmt.Errorf("%w after %v", ctx.Err(), p.Timeout.D())
					}
					r.err = fmt.Errorf("%v: %s", err, trimOutput(out))
				}
			} else {
				r.probe = p.URL
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					r.err = err
				} else {
					resp.Body.Close()
					if resp.StatusCode/100 != 2 {
						r.err = fmt.Errorf("HTTP %s", resp.Status)
					}
				}
			}
			select {
			case a.probed <- r:
			case <-a.ctx.Done(): // the agent stopped: nobody reads
			}
		}()
	}
}

// shellCommand prepares sh -c command with env added, in a process group
// of its own: when ctx is done the whole group is killed (a grandchild,
// such as a command put in the background, included), and Wait gives up
// on the output pipes a second later (a grandchild that escaped the
// group could hold them open for as long as it lives).
func shellCommand(ctx context.Context, command string, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

func trimOutput(b []byte) string {
	s := string(b)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}

// probeDone takes a probe's result: a failure for a process still under
// watch marks the patch bad.
func (a *Agent) probeDone(r probeResult) {
	if r.err == nil {
		return
	}
	for _, w := range a.st.Watches {
		if w.PID == r.pid && w.Patch == r.patch {
			a.metrics.probeFailures++
			a.log.add(Event{Type: "probe_failed", PID: r.pid, Patch: r.patch, Message: r.probe, Error: r.err.Error()})
			a.submit(job{kind: jobRevert, pid: r.pid, id: r.patch, why: "rollback: its health probe failed"})
			a.markBad(r.patch, r.pid, fmt.Sprintf("the health probe of process %d failed", r.pid))
			return
		}
	}
}
