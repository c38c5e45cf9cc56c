package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/patch"
)

// Restart safety beyond state.json. The processes hold the truth of what
// is applied (engine.Status reads it from their memory); the agent's own
// files only say what it meant to do. Two things follow:
//
//   - every engine call is recorded before it starts (apply_started,
//     revert_started) and after it ends; a call the last run started and
//     did not record the end of (it was killed in between) is found at the
//     next start and recorded from what the process says;
//   - a state.json that does not parse is rebuilt from the processes, the
//     patches kept in STATE/patches/ and the event log, never a reason not
//     to start (a crash loop under systemd protects nothing).

// pidPatch names one patch in one process.
type pidPatch struct {
	pid int
	id  string
}

// recordInterrupted reads the event log for engine calls of the last run
// that have a start and no end, and records their outcome as the
// processes tell it. It runs before "started" is logged, so a later start
// only looks at the calls made since the last "started" or "stopped".
func (a *Agent) recordInterrupted() {
	open := map[pidPatch]Event{}
	// recorded: the patches whose apply was recorded and not their revert
	// (a revert of a patch the process did not carry records nothing).
	recorded := map[pidPatch]bool{}
	ReadEvents(context.Background(), a.cfg.StateDir, false, func(e Event) error {
		k := pidPatch{e.PID, e.Patch}
		switch e.Type {
		case "started", "stopped":
			clear(open)
		case "apply_started", "revert_started":
			open[k] = e
		case "applied", "apply_failed", "busy", "reverted", "revert_failed":
			delete(open, k)
		}
		switch e.Type {
		case "applied":
			recorded[k] = true
		case "reverted":
			delete(recorded, k)
		}
		return nil
	})
	for k, e := range open {
		st, err := engine.Status(k.pid)
		if err != nil {
			continue // the process ended: there is nothing to record
		}
		var rec *engine.Applied
		for i := range st {
			if st[i].ID == k.id {
				rec = &st[i]
			}
		}
		switch e.Type {
		case "apply_started":
			switch {
			case rec == nil || rec.AppliedAt.Before(e.Time.Add(-time.Second)):
				// Not applied by that call (or applied long before it,
				// and already recorded): nothing happened to record.
			case rec.State == "applied":
				a.recordLate(k.pid, k.id, e.Time)
			default:
				// Half done: the next apply completes or undoes it.
				a.unrecorded[k] = e.Time
			}
		case "revert_started":
			if rec == nil && recorded[k] {
				a.log.add(Event{Type: "reverted", PID: k.pid, Patch: k.id,
					Message: "recorded at the start: the last run was stopped after the engine reverted it, before it recorded it"})
				a.stopWatch(k.pid, k.id)
			}
		}
	}
}

// recordLate records an apply that the last run made and did not record,
// and starts its health watch.
func (a *Agent) recordLate(pid int, id string, started time.Time) {
	st, err := engine.Status(pid)
	if err != nil {
		return
	}
	for _, s := range st {
		if s.ID != id || s.State != "applied" {
			continue
		}
		a.log.add(Event{Type: "applied", PID: pid, Patch: id, Version: s.Version,
			Message: fmt.Sprintf("recorded at the start: the last run was stopped after the engine applied it (apply started %s), before it recorded it",
				started.Format(time.RFC3339Nano))})
		if start, ok := startTime(pid); ok {
			a.startWatch(pid, start, id, s.Functions)
		}
	}
}

// rebuildState replaces a state.json that does not parse: it is kept as
// state.json.torn, and the state is rebuilt from what outlives it.
func (a *Agent) rebuildState(cause error) {
	path := filepath.Join(a.cfg.StateDir, stateFile)
	os.Rename(path, path+".torn")
	st := &persisted{Bad: map[string]badPatch{}, Managed: map[string]managed{}}
	// Managed: the patches kept in STATE/patches/.
	ents, _ := os.ReadDir(filepath.Join(a.cfg.StateDir, keptDir))
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".hpatch")
		if !ok || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(a.cfg.StateDir, keptDir, e.Name()))
		if err != nil {
			continue
		}
		p, err := patch.Load(data)
		if err == nil {
			err = patch.Verify(p, a.trusted)
		}
		if err != nil || p.ID != id {
			continue
		}
		st.Managed[id] = managed{Version: p.Version, Digest: patch.FileDigest(data)}
	}
	// Bad: the rollbacks of the event log. A new file for the patch
	// clears it at the first read of the patch directory, as always.
	ReadEvents(context.Background(), a.cfg.StateDir, false, func(e Event) error {
		if e.Type == "rolled_back" && e.Patch != "" {
			st.Bad[e.Patch] = badPatch{Digest: e.Digest, Reason: e.Message, PID: e.PID, Time: e.Time}
		}
		return nil
	})
	// Watches: the processes that carry a managed patch applied less
	// than a health window ago.
	a.st = st
	watches := "the health watches in progress"
	if pids, err := a.carriers(""); err != nil {
		watches = "not the health watches (" + err.Error() + ")"
	} else {
		for _, pid := range pids {
			sts, err := engine.Status(pid)
			start, ok := startTime(pid)
			if err != nil || !ok {
				continue
			}
			maps, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
			ranges := patchRanges(maps)
			for _, s := range sts {
				until := s.AppliedAt.Add(a.cfg.Health.Window.D())
				if _, ok := st.Managed[s.ID]; !ok || s.State != "applied" || !time.Now().Before(until) {
					continue
				}
				w := watch{PID: pid, Start: start, Patch: s.ID, Applied: s.AppliedAt, Until: until, Code: s.Functions}
				for _, r := range ranges {
					if r.id == s.ID {
						w.Mapped = append(w.Mapped, [2]uint64{r.start, r.end})
					}
				}
				st.Watches = append(st.Watches, w)
			}
		}
	}
	a.save()
	a.log.add(Event{Type: "state_rebuilt", Error: cause.Error(), Message: fmt.Sprintf(
		"%s was kept as %s.torn; rebuilt from the processes, the kept patches and the event log: %d managed patches, %d bad, %d health watches (%s)",
		stateFile, stateFile, len(st.Managed), len(st.Bad), len(st.Watches), watches)})
}
