package agent

import (
	"errors"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/patch"
)

type jobKind int

const (
	jobApply jobKind = iota
	jobRevert
)

// job is one engine call for one process.
type job struct {
	kind   jobKind
	pid    int
	id     string
	p      *patch.Patch
	digest string
	// why says what a revert is for (an event's message).
	why string
}

type jobResult struct {
	job
	res  *engine.Result
	code []engine.FuncInfo // where the patch's functions landed
	err  error
	took time.Duration
	// abandoned: the agent stopped before a worker took the job.
	abandoned bool
}

// worker runs engine jobs until the agent stops; a job it has started is
// always finished (and its result delivered) first.
func (a *Agent) worker() {
	for {
		select {
		case <-a.stop:
			return
		case j := <-a.jobs:
			r := jobResult{job: j}
			start := time.Now()
			// Recorded before the engine acts: if the agent is killed
			// before it records the result, the next start finds the
			// call open and records what the process says
			// (recordInterrupted).
			switch j.kind {
			case jobApply:
				a.log.add(Event{Type: "apply_started", PID: j.pid, Patch: j.id, Version: j.p.Version})
			case jobRevert:
				a.log.add(Event{Type: "revert_started", PID: j.pid, Patch: j.id, Message: j.why})
			}
			switch j.kind {
			case jobApply:
				r.res, r.err = engine.Apply(j.pid, j.p, engine.Options{Trusted: a.trusted, Timeout: a.cfg.Timeout.D(), Digest: j.digest})
				if r.err == nil {
					if st, err := engine.Status(j.pid); err == nil {
						for _, s := range st {
							if s.ID == j.id {
								r.code = s.Functions
							}
						}
					}
				}
			case jobRevert:
				r.res, r.err = engine.Revert(j.pid, j.id, a.cfg.Timeout.D())
			}
			r.took = time.Since(start)
			a.results <- r
		}
	}
}

// submit hands a job to a worker unless the process already has one.
func (a *Agent) submit(j job) {
	if a.busyPIDs[j.pid] {
		return
	}
	a.busyPIDs[j.pid] = true
	go func() {
		select {
		case a.jobs <- j:
		case <-a.stop:
			a.results <- jobResult{job: j, abandoned: true}
		}
	}()
}

// finished takes a job's result: events, retries, health watches.
func (a *Agent) finished(r jobResult) {
	delete(a.busyPIDs, r.pid)
	if r.abandoned {
		return
	}
	pi := a.procs[r.pid]
	exe := ""
	if pi != nil {
		exe = pi.exe
	}
	ev := Event{PID: r.pid, Exe: exe, Patch: r.id}
	switch r.kind {
	case jobApply:
		var busy *engine.BusyError
		switch {
		case r.err == nil:
			ev.Type, ev.PausedUS, ev.Functions = "applied", r.res.Paused.Microseconds(), r.res.Functions
			ev.Version = r.p.Version
			a.metrics.applyLatency(r.took)
			a.log.add(ev)
			if pi != nil {
				delete(pi.retry, r.id)
				pi.patched = true
				a.startWatch(r.pid, pi.start, r.id, r.code)
			}
			// A bad verdict may have come in while the job ran.
			if _, bad := a.st.Bad[r.id]; bad {
				a.submit(job{kind: jobRevert, pid: r.pid, id: r.id, why: "the patch was marked bad meanwhile"})
			}
			return
		case errors.Is(r.err, engine.ErrAlreadyApplied):
			// Applied by a call the last run did not record the end
			// of, which the engine's recovery completed.
			if t, ok := a.unrecorded[pidPatch{r.pid, r.id}]; ok {
				delete(a.unrecorded, pidPatch{r.pid, r.id})
				a.recordLate(r.pid, r.id, t)
			}
			return
		case errors.Is(r.err, engine.ErrNoProcess):
			return // it ended
		case errors.As(r.err, &busy):
			ev.Type, ev.Function, ev.Error = "busy", busy.Function, r.err.Error()
			a.log.add(ev)
			if pi != nil {
				rs := a.retryLater(pi, r.id)
				rs.busy++
				if busy.NeverReturns || rs.busy >= a.cfg.Fallback.After {
					a.fallback(r.pid, pi, r.id, rs, r.err)
				}
			}
		case pi != nil && pi.quickLooks > 0 && !refusedForGood(r.err):
			// A program that just started may not have loaded what the
			// patch needs yet (the target library, libc): the next quick
			// look tries again.
			return
		default:
			ev.Type, ev.Error = "apply_failed", r.err.Error()
			a.log.add(ev)
			if pi != nil {
				rs := a.retryLater(pi, r.id)
				rs.busy++
				if refusedForGood(r.err) || rs.busy >= a.cfg.Fallback.After {
					a.fallback(r.pid, pi, r.id, rs, r.err)
				}
			}
		}
	case jobRevert:
		switch {
		case r.err == nil:
			ev.Type, ev.PausedUS, ev.Message = "reverted", r.res.Paused.Microseconds(), r.why
			a.log.add(ev)
			a.stopWatch(r.pid, r.id)
		case errors.Is(r.err, engine.ErrNotApplied), errors.Is(r.err, engine.ErrNoProcess):
			a.stopWatch(r.pid, r.id)
		default:
			ev.Type, ev.Error = "revert_failed", r.err.Error()
			a.log.add(ev)
		}
	}
}

// refusedForGood tells the engine's refusals that no retry will change:
// the process's seccomp filter, its code not being the patch's original.
func refusedForGood(err error) bool {
	var sec *engine.SeccompError
	var mis *engine.MismatchError
	return errors.As(err, &sec) || errors.As(err, &mis)
}

// retryLater schedules the next attempt of a patch on a process, the
// delay doubling from cfg.Retry up to 10 minutes.
func (a *Agent) retryLater(pi *procInfo, id string) *retryState {
	rs := pi.retry[id]
	if rs == nil {
		rs = &retryState{delay: a.cfg.Retry.D()}
		pi.retry[id] = rs
	} else {
		rs.delay = min(rs.delay*2, 10*time.Minute)
	}
	rs.at = time.Now().Add(rs.delay)
	return rs
}
