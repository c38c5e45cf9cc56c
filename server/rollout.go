package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/store"
)

// failureTypes are the device events that count as a failure of a patch
// on a device (against its ring's budget).
var failureTypes = []string{"apply_failed", "rolled_back", "crash", "probe_failed"}

func (s *Server) startRollout(r *http.Request, who identity) (any, error) {
	var req api.RolloutRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return s.newRollout(r.Context(), who, req)
}

// validRingName accepts the names a ring may have: 1 to 64 letters,
// digits, '-', '_' and '.'.
func validRingName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("ring name %q: give 1 to 64 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("ring name %q: use letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// checkRolloutRequest refuses what the CLI refuses too: the API is no
// back door around its checks.
func checkRolloutRequest(req api.RolloutRequest) error {
	if len(req.Rings) == 0 {
		return errorf(http.StatusBadRequest, "give at least one ring (--rings canary,broad, or all)")
	}
	if len(req.Rings) > 64 {
		return errorf(http.StatusBadRequest, "%d rings; at most 64", len(req.Rings))
	}
	seen := map[string]bool{}
	for _, ring := range req.Rings {
		if err := validRingName(ring); err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
		if seen[ring] {
			return errorf(http.StatusBadRequest, "ring %q is given twice", ring)
		}
		seen[ring] = true
	}
	if req.MaxFailures < 0 {
		return errorf(http.StatusBadRequest, "max_failures %d: give 0 or more", req.MaxFailures)
	}
	if req.Soak < 0 {
		return errorf(http.StatusBadRequest, "soak %v: give 0 or more", req.Soak)
	}
	for ring, w := range req.Windows {
		if !seen[ring] {
			return errorf(http.StatusBadRequest, "a window for ring %q, which the rollout does not have", ring)
		}
		if _, _, err := parseWindow(w); err != nil {
			return errorf(http.StatusBadRequest, "window of ring %s: %v", ring, err)
		}
	}
	return nil
}

// newRollout starts a rollout (the API and the dashboard). One rollout
// of a patch id runs at a time.
func (s *Server) newRollout(ctx context.Context, who identity, req api.RolloutRequest) (api.Rollout, error) {
	if err := checkRolloutRequest(req); err != nil {
		return api.Rollout{}, err
	}
	info, err := s.st.Patch(ctx, req.Patch)
	if errors.Is(err, store.ErrNotFound) {
		return api.Rollout{}, errorf(http.StatusNotFound, "no published patch %q", req.Patch)
	} else if err != nil {
		return api.Rollout{}, err
	}
	now := time.Now().UTC()
	ro := store.Rollout{Windows: req.Windows, Members: map[string][]string{}}
	ro.ID, ro.Patch, ro.State, ro.Soak, ro.MaxFailures, ro.Critical, ro.Created, ro.Updated =
		newID("ro-"), info, api.StateRunning, req.Soak, req.MaxFailures, req.Critical, now, now
	for _, name := range req.Rings {
		ro.Rings = append(ro.Rings, api.Ring{Name: name, State: api.RingPending, Window: req.Windows[name]})
	}
	started := api.AuditEvent{Actor: who.actor(), Type: "rollout_started", Rollout: ro.ID, Patch: info.ID,
		Message: fmt.Sprintf("rings %s, soak %v, max failures %d", strings.Join(req.Rings, ","), req.Soak, req.MaxFailures)}
	if _, err := s.st.SaveRollout(ctx, ro, time.Time{}, false, []api.AuditEvent{started}); errors.Is(err, store.ErrActiveRollout) {
		return api.Rollout{}, errorf(http.StatusConflict, "%v; halt it or wait until it is done (one rollout of a patch runs at a time)", err)
	} else if err != nil {
		return api.Rollout{}, err
	}
	s.dashboardChanged()
	s.driveSoon()
	cur, err := s.advance(ctx, ro.ID)
	if err != nil {
		// The rollout exists; the engine takes its first step on a
		// later tick.
		s.log.Printf("rollout %s: %v; its first step waits for the next tick", ro.ID, err)
		return ro.Rollout, nil
	}
	return cur, nil
}

func (s *Server) rollouts(r *http.Request, _ identity) (any, error) {
	ros, err := s.st.Rollouts(r.Context())
	out := []api.Rollout{}
	for _, ro := range ros {
		out = append(out, ro.Rollout)
	}
	return out, err
}

func (s *Server) rollout(r *http.Request, _ identity) (any, error) {
	ro, err := s.st.Rollout(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, fmt.Errorf("rollout %q: %w", r.PathValue("id"), err)
	}
	return ro.Rollout, nil
}

func (s *Server) rolloutAction(r *http.Request, who identity) (any, error) {
	var rings []string
	if v := r.URL.Query().Get("rings"); v != "" {
		rings = strings.Split(v, ",")
	}
	return s.steer(r.Context(), who, r.PathValue("id"), r.PathValue("action"), rings)
}

// steer halts, resumes or rolls back a rollout (the API and the
// dashboard). A rollback with rings reverts the patch in those rings
// only (and halts the rollout if it runs); without, in every ring.
func (s *Server) steer(ctx context.Context, who identity, id, action string, rings []string) (api.Rollout, error) {
	s.driving.Lock()
	defer s.driving.Unlock()
	ro, err := s.st.Rollout(ctx, id)
	if err != nil {
		return api.Rollout{}, fmt.Errorf("rollout %q: %w", id, err)
	}
	if len(rings) > 0 && action != "rollback" {
		return api.Rollout{}, errorf(http.StatusBadRequest, "rings are for rollback only")
	}
	for _, name := range rings {
		if !slices.ContainsFunc(ro.Rings, func(r api.Ring) bool { return r.Name == name }) {
			return api.Rollout{}, errorf(http.StatusBadRequest, "rollout %s has no ring %q", ro.ID, name)
		}
	}
	switch action {
	case "halt":
		if ro.State != api.StateRunning {
			return api.Rollout{}, errorf(http.StatusConflict, "rollout %s is %s, not running", ro.ID, ro.State)
		}
		ro.State, ro.Reason = api.StateHalted, "halted by "+who.actor()
	case "resume":
		if ro.State != api.StateHalted || reverting(ro) {
			return api.Rollout{}, errorf(http.StatusConflict, "rollout %s is %s; only a rollout halted by hand, with no ring rolled back, resumes", ro.ID, ro.State)
		}
		ro.State, ro.Reason = api.StateRunning, ""
	case "rollback":
		if ro.State == api.StateRolledBack {
			return api.Rollout{}, errorf(http.StatusConflict, "rollout %s is already rolled back", ro.ID)
		}
		if len(rings) == 0 {
			ro.State, ro.Revert, ro.Reason = api.StateRolledBack, true, "rolled back by "+who.actor()
			for i := range ro.Rings {
				ro.Rings[i].Revert = true
			}
			break
		}
		for _, name := range rings {
			ro.Rings[slices.IndexFunc(ro.Rings, func(r api.Ring) bool { return r.Name == name })].Revert = true
		}
		ro.State, ro.Reason = api.StateHalted, fmt.Sprintf("rings %s rolled back by %s", strings.Join(rings, ","), who.actor())
		if !slices.ContainsFunc(ro.Rings, func(r api.Ring) bool { return !r.Revert && r.State != api.RingPending && r.State != api.RingWaiting }) {
			ro.State = api.StateRolledBack
		}
	default:
		return api.Rollout{}, errorf(http.StatusNotFound, "no action %q: halt, resume or rollback", action)
	}
	prev := ro.Updated
	ro.Updated = time.Now().UTC()
	if !ro.Updated.After(prev) {
		ro.Updated = prev.Add(time.Nanosecond)
	}
	ev := api.AuditEvent{Actor: who.actor(), Type: "rollout_" + action, Rollout: ro.ID, Patch: ro.Patch.ID, Message: ro.Reason}
	n, err := s.st.SaveRollout(ctx, ro, prev, true, []api.AuditEvent{ev})
	switch {
	case errors.Is(err, store.ErrConflict):
		return api.Rollout{}, errorf(http.StatusConflict, "rollout %s changed meanwhile; try again", ro.ID)
	case errors.Is(err, store.ErrActiveRollout):
		return api.Rollout{}, errorf(http.StatusConflict, "%v; one rollout of a patch runs at a time", err)
	case err != nil:
		return api.Rollout{}, err
	}
	s.sawChange(n)
	s.dashboardChanged()
	return ro.Rollout, nil
}

// reverting reports whether a rollout takes its patch off somewhere.
func reverting(ro store.Rollout) bool {
	return ro.Revert || slices.ContainsFunc(ro.Rings, func(r api.Ring) bool { return r.Revert })
}

// driveSoon asks the rollout engine to look now (a device reported).
func (s *Server) driveSoon() {
	select {
	case s.driveNow <- struct{}{}:
	default:
	}
}

// drive runs the rollout engine: on a ticker and when devices report.
func (s *Server) drive() {
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.driveNow:
		}
		ctx := context.Background()
		ros, err := s.st.Rollouts(ctx)
		var errs []error
		if err != nil {
			errs = append(errs, fmt.Errorf("reading the rollouts: %w", err))
		}
		for _, ro := range ros {
			if ro.State == api.StateRunning {
				if _, err := s.advance(ctx, ro.ID); err != nil {
					errs = append(errs, fmt.Errorf("rollout %s: %w; it stays where it was", ro.ID, err))
				}
			}
		}
		// The same failure every tick is logged once, until it changes.
		if msg := fmt.Sprint(errors.Join(errs...)); len(errs) > 0 && msg != lastErr {
			s.log.Print(msg)
			lastErr = msg
		} else if len(errs) == 0 {
			lastErr = ""
		}
		s.sampleExposure(ctx)
	}
}

// advance moves a running rollout on as far as it can go now, and
// returns it. Every step it takes is stored with its audit events and,
// when devices' desired state changes, the change counter, in one
// transaction. When the store fails (a device's failures cannot be
// read, say) it takes no step and returns the error: a health gate
// that cannot look does not open.
func (s *Server) advance(ctx context.Context, id string) (api.Rollout, error) {
	s.driving.Lock()
	defer s.driving.Unlock()
	ro, err := s.st.Rollout(ctx, id)
	if err != nil || ro.State != api.StateRunning {
		return ro.Rollout, err
	}
	devices, err := s.st.Devices(ctx)
	if err != nil {
		return ro.Rollout, err
	}
	now := time.Now().UTC()
	prev := ro.Updated
	changed, bump := false, false
	var audits []api.AuditEvent
	audit := func(e api.AuditEvent) { audits = append(audits, e) }
	before := slices.Clone(ro.Rings)
	// halt stops the rollout on a ring that failed beyond its budget:
	// the patch comes off in that ring only; the rings that finished
	// keep it until an operator decides (rollback --rings).
	halt := func(ring *api.Ring) {
		ring.State, ring.Revert = api.RingHalted, true
		ro.State = api.StateHalted
		var keep []string
		for _, r := range ro.Rings {
			if r.Name != ring.Name && r.State != api.RingPending && r.State != api.RingWaiting && !r.Revert {
				keep = append(keep, r.Name)
			}
		}
		ro.Reason = fmt.Sprintf("ring %s: %d %s failed, more than the budget of %d; reverting in ring %s", ring.Name, ring.Failed, plural(ring.Failed, "device", "devices"), ro.MaxFailures, ring.Name)
		if len(keep) > 0 {
			ro.Reason += fmt.Sprintf("; rings %s keep the patch until an operator rolls them back (hotpatch fleet rollout rollback %s --rings %s) or not", strings.Join(keep, ","), ro.ID, strings.Join(keep, ","))
		}
		audit(api.AuditEvent{Actor: "server", Type: "rollout_halted", Rollout: ro.ID, Patch: ro.Patch.ID, Message: ro.Reason})
		changed, bump = true, true
	}
	for i := range ro.Rings {
		ring := &ro.Rings[i]
		if ring.State == api.RingDone {
			// A failure that reaches the server after its ring finished
			// (a crash report still on its way when a short soak ended)
			// counts against that ring's budget while the rollout runs.
			n, err := s.failedMembers(ctx, &ro, ring)
			if err != nil {
				return ro.Rollout, err
			}
			if n > ro.MaxFailures {
				ring.Failed = n
				halt(ring)
				break
			}
			continue
		}
		if ring.State == api.RingPending || ring.State == api.RingWaiting {
			if !ro.Critical && !inWindow(ring.Window, time.Now()) {
				if ring.State != api.RingWaiting {
					ring.State, changed = api.RingWaiting, true
				}
				break
			}
			members := ringMembers(devices, ring.Name)
			ro.Members[ring.Name] = members
			ring.State, ring.Started, ring.Devices = api.RingActive, now, len(members)
			changed, bump = true, true
			audit(api.AuditEvent{Actor: "server", Type: "ring_started", Rollout: ro.ID, Patch: ro.Patch.ID, Message: fmt.Sprintf("ring %s: %d %s", ring.Name, len(members), plural(len(members), "device", "devices"))})
		}
		if err := s.count(ctx, &ro, ring, devices); err != nil {
			return ro.Rollout, err
		}
		if ring.Failed > ro.MaxFailures {
			halt(ring)
			break
		}
		if ring.State == api.RingActive && ring.Pending == 0 {
			ring.State, ring.SoakUntil, changed = api.RingSoaking, now.Add(ro.Soak), true
		}
		if ring.State == api.RingSoaking && !now.Before(ring.SoakUntil) {
			ring.State, changed = api.RingDone, true
			audit(api.AuditEvent{Actor: "server", Type: "ring_done", Rollout: ro.ID, Patch: ro.Patch.ID,
				Message: fmt.Sprintf("ring %s: %d applied, %d not needed, %d failed", ring.Name, ring.Applied, ring.NotNeeded, ring.Failed)})
			continue // the next ring may start now
		}
		break
	}
	if ro.State == api.StateRunning && ro.Rings[len(ro.Rings)-1].State == api.RingDone {
		ro.State, changed = api.StateDone, true
		audit(api.AuditEvent{Actor: "server", Type: "rollout_done", Rollout: ro.ID, Patch: ro.Patch.ID})
	}
	// The counters are stored as they move too: the dashboard shows a
	// ring's progress device by device.
	changed = changed || !slices.Equal(before, ro.Rings)
	if !changed {
		return ro.Rollout, nil
	}
	ro.Updated = now
	if !now.After(prev) {
		ro.Updated = prev.Add(time.Nanosecond)
	}
	n, err := s.st.SaveRollout(ctx, ro, prev, bump, audits)
	if errors.Is(err, store.ErrConflict) {
		cur, err := s.st.Rollout(ctx, id) // another replica moved it on
		return cur.Rollout, err
	} else if err != nil {
		return ro.Rollout, err
	}
	if bump {
		s.sawChange(n) // the devices first: their desired state changed
	}
	s.dashboardChanged()
	return ro.Rollout, nil
}

// ringMembers are the devices a ring starts with: approved, unrevoked
// devices of that ring (any ring for "all"). A device the operator has
// not approved is in no ring.
func ringMembers(devices []store.Device, ring string) []string {
	var members []string
	for _, d := range devices {
		if d.Revoked.IsZero() && !d.Approved.IsZero() && d.Ring != "" && (ring == "all" || d.Ring == ring) {
			members = append(members, d.ID)
		}
	}
	return members
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// count fills a ring's counters from its devices' inventories and events.
func (s *Server) count(ctx context.Context, ro *store.Rollout, ring *api.Ring, devices []store.Device) error {
	byID := map[string]store.Device{}
	for _, d := range devices {
		byID[d.ID] = d
	}
	failed, err := s.st.DevicesWithEvents(ctx, ro.Patch.ID, ring.Started, failureTypes)
	if err != nil {
		return fmt.Errorf("reading the failures of ring %s: %w", ring.Name, err)
	}
	ring.Applied, ring.NotNeeded, ring.Failed, ring.Pending = 0, 0, 0, 0
	for _, id := range ro.Members[ring.Name] {
		switch memberState(byID[id], ro.Patch, ring.Started, failed[id]) {
		case memberFailed:
			ring.Failed++
		case memberApplied:
			ring.Applied++
		case memberNotNeeded:
			ring.NotNeeded++
		default:
			ring.Pending++
		}
	}
	return nil
}

// failedMembers counts the devices of a started ring that reported a
// failure of the rollout's patch since the ring started.
func (s *Server) failedMembers(ctx context.Context, ro *store.Rollout, ring *api.Ring) (int, error) {
	failed, err := s.st.DevicesWithEvents(ctx, ro.Patch.ID, ring.Started, failureTypes)
	if err != nil {
		return 0, fmt.Errorf("reading the failures of ring %s: %w", ring.Name, err)
	}
	n := 0
	for _, id := range ro.Members[ring.Name] {
		if failed[id] {
			n++
		}
	}
	return n, nil
}

// Where one device of a started ring stands.
const (
	memberPending   = "pending"
	memberApplied   = "applied"
	memberNotNeeded = "not_needed"
	memberFailed    = "failed"
)

// memberState tells where a device of a ring that started at a time
// stands with a patch; failed: it reported a failure since.
//
// Decision: the server decides from the device's last inventory. An
// agent sends its inventory whenever it changes (and every resync), so
// the last one is the device's state as of now: a device whose last
// inventory shows the patch applied in every process of the target, or
// no such process, settles its ring at once, with no report to wait
// for. A device still vulnerable in an inventory older than the ring is
// pending: it has not heard of the ring yet. One that never reported is
// pending too.
func memberState(d store.Device, p api.PatchInfo, started time.Time, failed bool) string {
	if failed {
		return memberFailed
	}
	state, _ := exposure(d, p)
	switch {
	case d.InventoryAt.IsZero():
		return memberPending // never reported
	case state == "protected" || state == "restart_needed":
		return memberApplied
	case state == "":
		return memberNotNeeded
	}
	return memberPending
}

// exposure tells, from a device's inventory, where it stands against one
// patch: "" (no process runs the target build), "protected" (every such
// process carries it), "restart_needed" (every such process carries it, but
// the patch changes only start-up code), "vulnerable"; and whether the target module
// changed on disk since (fixed on disk once restarted).
func exposure(d store.Device, p api.PatchInfo) (state string, changedOnDisk bool) {
	mapped, patched := 0, 0
	for _, proc := range d.Inventory.Processes {
		runs := false
		for _, m := range proc.Modules {
			if m.BuildID == p.TargetBuildID {
				runs = true
				changedOnDisk = changedOnDisk || m.Changed
			}
		}
		if !runs {
			continue
		}
		mapped++
		for _, a := range proc.Patches {
			if a.ID == p.ID && a.State == "applied" {
				patched++
				break
			}
		}
	}
	switch {
	case mapped == 0:
		return "", false
	case patched == mapped && p.StartupOnly:
		return "restart_needed", changedOnDisk
	case patched == mapped:
		return "protected", changedOnDisk
	}
	return "vulnerable", changedOnDisk
}

// desired is a device's desired state: for every patch id, what the
// rollouts whose started rings include the device want. A rollout that
// wants the patch on the device wins over one that takes it off there
// (a halt or rollback reverts only where that rollout brought the
// patch, never where another still wants it); among several, the
// newest.
func (s *Server) desired(ctx context.Context, d store.Device, seq int64, changed bool) (any, error) {
	rc, err := s.rolloutsAt(ctx, seq)
	if err != nil {
		return nil, err
	}
	resp := api.SyncResponse{Cursor: seq, Changed: changed, Patches: []api.DesiredPatch{}, Resync: s.cfg.Resync}
	byID := map[string]int{}
	for i, ro := range rc.ros { // oldest first: a newer rollout of the same id replaces
		action, ok := rc.members[i][d.ID]
		if !ok {
			continue
		}
		dp := api.DesiredPatch{ID: ro.Patch.ID, Version: ro.Patch.Version, SHA256: ro.Patch.SHA256, Action: action, Rollout: ro.ID, TargetBuildID: ro.Patch.TargetBuildID}
		if j, ok := byID[dp.ID]; ok {
			if dp.Action == api.ActionRevert && resp.Patches[j].Action == api.ActionApply {
				continue
			}
			resp.Patches[j] = dp
			continue
		}
		byID[dp.ID] = len(resp.Patches)
		resp.Patches = append(resp.Patches, dp)
	}
	return resp, nil
}

// rolloutCache is the rollouts as of one value of the change counter,
// with the devices of their started rings and what each must do: what
// every sync answer needs, read once per change rather than once per
// device (a change wakes every long-poll of the fleet at once).
type rolloutCache struct {
	seq     int64
	ros     []store.Rollout
	members []map[string]string // device id → api.ActionApply or api.ActionRevert
}

func (s *Server) rolloutsAt(ctx context.Context, seq int64) (*rolloutCache, error) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if s.cache != nil && s.cache.seq == seq {
		return s.cache, nil
	}
	ros, err := s.st.Rollouts(ctx)
	if err != nil {
		return nil, err
	}
	rc := &rolloutCache{seq: seq, ros: ros}
	for _, ro := range ros {
		m := map[string]string{}
		for _, ring := range ro.Rings {
			if ring.State == api.RingPending || ring.State == api.RingWaiting {
				continue
			}
			action := api.ActionApply
			if ro.Revert || ring.Revert {
				action = api.ActionRevert
			}
			for _, id := range ro.Members[ring.Name] {
				if m[id] != api.ActionApply { // a device in two rings of one rollout ("all" and its own)
					m[id] = action
				}
			}
		}
		rc.members = append(rc.members, m)
	}
	s.cache = rc
	return rc, nil
}

// report is the per-CVE view of the fleet.
func (s *Server) report(r *http.Request, _ identity) (any, error) {
	patches, err := s.st.Patches(r.Context())
	if err != nil {
		return nil, err
	}
	devices, err := s.st.Devices(r.Context())
	if err != nil {
		return nil, err
	}
	rep := cveReport(patches, devices, r.URL.Query().Get("cve"))
	ros, err := s.st.Rollouts(r.Context())
	if err != nil {
		return nil, err
	}
	for _, ro := range ros {
		for _, ring := range ro.Rings {
			rep.Rings = append(rep.Rings, api.RingReport{Rollout: ro.ID, Ring: ring.Name, State: ring.State, Applied: ring.Applied, Devices: ring.Devices})
		}
	}
	return rep, nil
}

// cveReport counts the devices per CVE (all CVEs, or only want, with a
// line per device).
func cveReport(patches []api.PatchInfo, devices []store.Device, want string) api.Report {
	byCVE := map[string][]api.PatchInfo{}
	for _, p := range patches {
		for _, c := range p.CVEs {
			if want == "" || strings.EqualFold(c, want) {
				byCVE[c] = append(byCVE[c], p)
			}
		}
	}
	rep := api.Report{CVEs: []api.CVEReport{}}
	cves := make([]string, 0, len(byCVE))
	for c := range byCVE {
		cves = append(cves, c)
	}
	sort.Strings(cves)
	for _, c := range cves {
		cr := api.CVEReport{CVE: c}
		for _, p := range byCVE[c] {
			cr.Patches = append(cr.Patches, p.ID)
		}
		for _, d := range devices {
			if !d.Revoked.IsZero() {
				continue
			}
			worst, fixed := "", false
			for _, p := range byCVE[c] {
				st, ch := exposure(d, p)
				fixed = fixed || ch
				if st == "vulnerable" || (st == "restart_needed" && worst != "vulnerable") || (st == "protected" && worst == "") {
					worst = st
				}
			}
			if worst == "" {
				continue // the device runs nothing the CVE is about
			}
			state := worst
			if fixed {
				state = "fixed_on_disk"
				cr.FixedOnDisk++
			}
			switch worst {
			case "vulnerable":
				cr.Vulnerable++
			case "restart_needed":
				cr.Vulnerable++
				cr.NeedRestart++
			case "protected":
				cr.Protected++
			}
			if want != "" { // per-device lines only for one CVE: a fleet is large
				cr.Devices = append(cr.Devices, api.DeviceExposure{Device: d.ID, Name: d.Name, State: state})
			}
		}
		rep.CVEs = append(rep.CVEs, cr)
	}
	return rep
}

// parseWindow reads "HH:MM-HH:MM" into minutes of the day.
func parseWindow(w string) (from, to int, err error) {
	if w == "" {
		return 0, 24 * 60, nil
	}
	var h1, m1, h2, m2 int
	if n, _ := fmt.Sscanf(w, "%d:%d-%d:%d", &h1, &m1, &h2, &m2); n != 4 || h1 > 24 || h2 > 24 || m1 > 59 || m2 > 59 || h1 < 0 || h2 < 0 || m1 < 0 || m2 < 0 {
		return 0, 0, fmt.Errorf("%q is not HH:MM-HH:MM", w)
	}
	return h1*60 + m1, h2*60 + m2, nil
}

// inWindow reports whether t falls in the daily window w (local time; it
// may wrap past midnight; "" is always).
func inWindow(w string, t time.Time) bool {
	from, to, err := parseWindow(w)
	if err != nil {
		return false
	}
	m := t.Hour()*60 + t.Minute()
	if from <= to {
		return m >= from && m < to
	}
	return m >= from || m < to
}

// metrics are the server's Prometheus series.
type metrics struct {
	longPolls atomic.Int64
	streams   atomic.Int64 // dashboard event streams open
}

func (s *Server) metricsText(r *http.Request, _ identity) (any, error) {
	ctx := r.Context()
	devices, err := s.st.Devices(ctx)
	if err != nil {
		return nil, err
	}
	ros, err := s.st.Rollouts(ctx)
	if err != nil {
		return nil, err
	}
	patches, err := s.st.Patches(ctx)
	if err != nil {
		return nil, err
	}
	states := map[string]int{}
	for _, ro := range ros {
		states[ro.State]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# HELP hotpatch_server_long_polls Device long-polls held open.\n# TYPE hotpatch_server_long_polls gauge\nhotpatch_server_long_polls %d\n", s.metrics.longPolls.Load())
	fmt.Fprintf(&b, "# HELP hotpatch_server_dashboard_streams Dashboard event streams open.\n# TYPE hotpatch_server_dashboard_streams gauge\nhotpatch_server_dashboard_streams %d\n", s.metrics.streams.Load())
	fmt.Fprintf(&b, "# HELP hotpatch_server_devices Enrolled devices.\n# TYPE hotpatch_server_devices gauge\nhotpatch_server_devices %d\n", len(devices))
	fmt.Fprintf(&b, "# HELP hotpatch_server_patches Published patches.\n# TYPE hotpatch_server_patches gauge\nhotpatch_server_patches %d\n", len(patches))
	fmt.Fprintf(&b, "# HELP hotpatch_server_rollouts Rollouts by state.\n# TYPE hotpatch_server_rollouts gauge\n")
	for _, st := range []string{api.StateRunning, api.StateHalted, api.StateDone, api.StateRolledBack} {
		fmt.Fprintf(&b, "hotpatch_server_rollouts{state=%q} %d\n", st, states[st])
	}
	return rawBody{"text/plain; version=0.0.4", []byte(b.String())}, nil
}

// count says "1 device", "2 devices".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
