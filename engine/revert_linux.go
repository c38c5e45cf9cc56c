//go:build linux && amd64

package engine

import (
	"fmt"
	"time"
)

func stateName(s uint32) string {
	switch s {
	case statePreparing:
		return StatePreparing
	case stateRedirecting:
		return StateRedirecting
	case stateApplied:
		return StateApplied
	case stateReverting:
		return StateReverting
	case stateReverted:
		return "reverted"
	}
	return fmt.Sprintf("unknown(%d)", s)
}

// Status lists the patches applied to a process, oldest first. It needs no
// daemon: the process's own mappings carry the records.
func Status(pid int) ([]Applied, error) {
	t, err := openTarget(pid)
	if err != nil {
		return nil, err
	}
	defer t.close()
	recs, err := t.records()
	if err != nil {
		return nil, err
	}
	out := make([]Applied, 0, len(recs))
	for _, a := range recs {
		if a.state == stateReverted {
			continue // reverted; only its code is kept mapped
		}
		st := stateName(a.state)
		if t.lost(a, recs) {
			st = StateLost
		}
		out = append(out, Applied{
			ID: a.rec.ID, Version: a.rec.Version, AppliedAt: time.Unix(0, a.rec.AppliedAt), Module: a.rec.Module,
			Base: a.base, Functions: a.rec.Functions, Replaced: len(a.rec.Redirects), State: st,
			StartupOnly: a.rec.StartupOnly,
		})
	}
	return out, nil
}

// Revert removes patch id from process pid: it puts back the exact bytes
// its redirects replaced, once no thread runs patch code, and unmaps the
// patch. A patch that another patch was stacked on is refused.
func Revert(pid int, id string, timeout time.Duration) (*Result, error) {
	existed := alive(pid)
	res, err := revertID(pid, id, timeout)
	return res, exitedDuring(pid, existed, "revert", err)
}

func revertID(pid int, id string, timeout time.Duration) (*Result, error) {
	if leaderGone(pid) {
		return nil, fmt.Errorf("process %d: %w", pid, ErrMainThreadExited)
	}
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	if mode, err := seccompMode(pid); err != nil {
		return nil, err
	} else if mode != 0 {
		return nil, &SeccompError{PID: pid, Mode: mode} // munmap could be fatal
	}
	t, err := openTarget(pid)
	if err != nil {
		return nil, err
	}
	defer t.close()
	if _, err := t.recoverHalfDone(timeout); err != nil {
		return nil, fmt.Errorf("process %d: recovering an interrupted apply: %w", pid, err)
	}
	if err := t.refresh(); err != nil {
		return nil, err
	}
	recs, err := t.records()
	if err != nil {
		return nil, err
	}
	t.cfi = t.unwindModules()
	var a *appliedPatch
	for i := range recs {
		if recs[i].rec.ID == id && recs[i].state != stateReverted {
			a = &recs[i] // the newest level of that id
		}
	}
	if a == nil {
		return nil, fmt.Errorf("process %d: %s: %w", pid, id, ErrNotApplied)
	}
	return t.revert(*a, recs, timeout)
}

// revert takes patch a out of the process. A patch in state lost (see
// lost) is cleaned up: its mapping goes once no thread runs its code, and
// nothing is written where its redirects were, since that code is no
// longer the patch's.
//
// A patch with a newer one stacked on the same entry (out-of-order
// revert) is taken out of the chain: the entry keeps the newer patch's
// jump, and the newer patch's record is rewired to put back, when it is
// reverted, what this patch's redirect replaced (its jump would lead into
// memory that is gone).
func (t *target) revert(a appliedPatch, all []appliedPatch, timeout time.Duration) (*Result, error) {
	lost := t.lost(a, all)
	var rewires []rewire
	if !lost {
		for _, rd := range a.rec.Redirects {
			if t.holds(rd.Site, rd.New) {
				continue
			}
			if b, j := t.stackedOn(a, rd, all); b != nil {
				rewires = append(rewires, rewire{b: b, j: j, old: rd.Old})
				continue
			}
			if b := t.newerAt(a, rd.Site, all); b != nil && a.state == stateApplied {
				return nil, fmt.Errorf("process %d: %s is patched again by %s (level %d) with a redirect of another size; revert that first", t.pid, rd.Function, b.rec.ID, b.rec.Version)
			}
		}
	}
	text := []codeRange{{name: a.rec.ID + " patch code", start: a.base + a.rec.Text[0], end: a.base + a.rec.Text[0] + a.rec.Text[1]}}
	// A return address a killed hotpatch redirected while it waited.
	rec := a.rec
	if rec.Hijack != nil {
		if err := t.unhijack(rec.Hijack); err != nil {
			return nil, err
		}
		rec.Hijack = nil
		if err := t.rewriteRecord(a.base, a.recOff, &rec, a.state); err != nil {
			return nil, err
		}
	}
	// Catch a thread leaving patch code with the return stub at the end
	// of the patch's own text: once caught, nothing refers to it.
	if a.state == stateApplied && !t.cxxRuntime() {
		t.catch = &catcher{
			id: a.rec.ID, state: StateApplied,
			stub: text[0].end - returnStubSize,
			record: func(hj *Hijack) error {
				rec.Hijack = hj
				return t.rewriteRecord(a.base, a.recOff, &rec, stateApplied)
			},
		}
		defer func() { t.catch = nil }()
	}
	restored := 0
	err := t.whenQuiet(text, timeout, func(w *world) error {
		if err := t.setState(a.base, stateReverting); err != nil {
			return err
		}
		for _, rd := range a.rec.Redirects {
			// Only where the jump still stands in the module it was
			// written into: anything else is no longer ours to write.
			if !t.ownsSite(a.rec, rd.Site, len(rd.New)) || !t.holds(rd.Site, rd.New) {
				continue
			}
			if err := t.mem.Poke(rd.Old, rd.Site); err != nil {
				return &HalfDoneError{PID: t.pid, ID: a.rec.ID, State: StateReverting,
					Err: fmt.Errorf("process %d: putting back the entry of %s: %w", t.pid, rd.Function, err)}
			}
			restored++
		}
		// Out of a chain: the newer patches now sit on what ours
		// replaced. (A kill before this leaves ours reverting with the
		// newer records unchanged: the next run rewires them again.)
		rewired := map[*appliedPatch]bool{}
		for _, r := range rewires {
			r.b.rec.Redirects[r.j].Old = r.old
			rewired[r.b] = true
			restored++
		}
		for b := range rewired {
			if err := t.rewriteRecord(b.base, b.recOff, &b.rec, b.state); err != nil {
				return &HalfDoneError{PID: t.pid, ID: a.rec.ID, State: StateReverting,
					Err: fmt.Errorf("process %d: rewiring %s over the reverted patch: %w", t.pid, b.rec.ID, err)}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res := &Result{PID: t.pid, Base: a.base, Paused: t.lastPause, Functions: restored, WasLost: lost}
	if m, _ := t.userContexts(); m != "" {
		// A coroutine suspended in the patch's code would return into
		// it: keep it mapped (read-only, executable) until the process
		// exits.
		if err := t.setState(a.base, stateReverted); err != nil {
			return nil, fmt.Errorf("process %d: the patch is reverted but could not be marked so: %w", t.pid, err)
		}
		res.KeptMapped = true
		return res, nil
	}
	if err := t.unmap(a.base, a.size); err != nil {
		return nil, fmt.Errorf("process %d: the patch is reverted but its memory could not be unmapped: %w", t.pid, err)
	}
	return res, nil
}

// recoverHalfDone finishes what a killed hotpatch left: a patch mapped but
// never redirected is unmapped; one caught while redirecting or reverting
// is reverted. It returns the ids it cleaned up.
func (t *target) recoverHalfDone(timeout time.Duration) ([]string, error) {
	recs, err := t.records()
	if err != nil {
		return nil, err
	}
	var done []string
	for _, a := range recs {
		switch a.state {
		case stateApplied, stateReverted:
			continue
		case statePreparing:
			if a.rec.Hijack != nil {
				if err := t.unhijack(a.rec.Hijack); err != nil {
					return done, err
				}
			}
			if err := t.unmap(a.base, a.size); err != nil {
				return done, err
			}
		default:
			if _, err := t.revert(a, recs, timeout); err != nil {
				return done, err
			}
		}
		done = append(done, a.rec.ID)
	}
	return done, nil
}
