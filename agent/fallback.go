package agent

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// fallback runs the configured restart command for a process that cannot
// be patched, if there is one and the maintenance window is open; outside
// the window it waits for the next retry.
func (a *Agent) fallback(pid int, pi *procInfo, id string, rs *retryState, cause error) {
	if a.cfg.Fallback.Command == "" || rs.fellBack {
		return
	}
	if !inWindow(a.cfg.Fallback.Window, time.Now()) {
		a.log.add(Event{Type: "fallback", PID: pid, Exe: pi.exe, Patch: id, Message: "waiting for the maintenance window " + a.cfg.Fallback.Window})
		return
	}
	rs.fellBack = true
	// The command runs beside the agent's loop (a restart can take a
	// while); its events are written from there, the count comes back.
	exe, command := pi.exe, a.cfg.Fallback.Command
	go func() {
		ctx, cancel := context.WithTimeout(a.ctx, 2*time.Minute)
		defer cancel()
		cmd := shellCommand(ctx, command, "HOTPATCH_PID="+strconv.Itoa(pid), "HOTPATCH_EXE="+exe, "HOTPATCH_PATCH="+id)
		out, err := cmd.CombinedOutput()
		if err != nil {
			a.log.add(Event{Type: "fallback_failed", PID: pid, Exe: exe, Patch: id, Error: fmt.Sprintf("%s: %v: %s", command, err, trimOutput(out))})
			return
		}
		a.log.add(Event{Type: "fallback", PID: pid, Exe: exe, Patch: id, Message: fmt.Sprintf("ran %q (%v)", command, cause)})
		select {
		case a.fellBack <- struct{}{}:
		case <-a.ctx.Done():
		}
	}()
}
