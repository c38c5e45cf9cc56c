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

// newRollout starts a rollout (the API and the dashboard).
func (s *Server) newRollout(ctx context.Context, who identity, req api.RolloutRequest) (api.Rollout, error) {
	info, err := s.st.Patch(ctx, req.Patch)
	if err != nil {
		return api.Rollout{}, errorf(http.StatusNotFound, "no published patch %q", req.Patch)
	}
	if len(req.Rings) == 0 {
		return api.Rollout{}, errorf(http.StatusBadRequest, "give at least one ring (--rings canary,broad, or all)")
	}
	for ring, w := range req.Windows {
		if !slices.Contains(req.Rings, ring) {
			return api.Rollout{}, errorf(http.StatusBadRequest, "a window for ring %q, which the rollout does not have", ring)
		}
		if _, _, err := parseWindow(w); err != nil {
			return api.Rollout{}, errorf(http.StatusBadRequest, "window of ring %s: %v", ring, err)
		}
	}
	now := time.Now().UTC()
	ro := store.Rollout{Windows: req.Windows, Members: map[string][]string{}}
	ro.ID, ro.Patch, ro.State, ro.Soak, ro.MaxFailures, ro.Critical, ro.Created, ro.Updated =
		newID("ro-"), info, api.StateRunning, req.Soak, req.MaxFailures, req.Critical, now, now
	for _, name := range req.Rings {
		ro.Rings = append(ro.Rings, api.Ring{Name: name, State: api.RingPending, Window: req.Windows[name]})
	}
	if err := s.st.AddRollout(ctx, ro); err != nil {
		return api.Rollout{}, err
	}
	s.audit(ctx, api.AuditEvent{Actor: who.actor(), Type: "rollout_started", Rollout: ro.ID, Patch: info.ID,
		Message: fmt.Sprintf("rings %s, soak %v, max failures %d", strings.Join(req.Rings, ","), req.Soak, req.MaxFailures)})
	s.kick()
	return s.advance(ctx, ro.ID)
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
	return s.steer(r.Context(), who, r.PathValue("id"), r.PathValue("action"))
}

// steer halts, resumes or rolls back a rollout (the API and the
// dashboard).
func (s *Server) steer(ctx context.Context, who identity, id, action string) (api.Rollout, error) {
	s.driving.Lock()
	defer s.driving.Unlock()
	ro, err := s.st.Rollout(ctx, id)
	if err != nil {
		return api.Rollout{}, fmt.Errorf("rollout %q: %w", id, err)
	}
	switch action {
	case "halt":
		if ro.State != api.StateRunning {
			return api.Rollout{}, errorf(http.StatusConflict, "rollout %s is %s, not running", ro.ID, ro.State)
		}
		ro.State, ro.Reason = api.StateHalted, "halted by "+who.actor()
	case "resume":
		if ro.State != api.StateHalted || ro.Revert {
			return api.Rollout{}, errorf(http.StatusConflict, "rollout %s is %s; only a rollout halted by hand resumes", ro.ID, ro.State)
		}
		ro.State, ro.Reason = api.StateRunning, ""
	case "rollback":
		if ro.State == api.StateRolledBack {
			return api.Rollout{}, errorf(http.StatusConflict, "rollout %s is already rolled back", ro.ID)
		}
		ro.State, ro.Revert, ro.Reason = api.StateRolledBack, true, "rolled back by "+who.actor()
	default:
		return api.Rollout{}, errorf(http.StatusNotFound, "no action %q: halt, resume or rollback", action)
	}
	prev := ro.Updated
	ro.Updated = time.Now().UTC()
	if err := s.st.UpdateRollout(ctx, ro, prev); errors.Is(err, store.ErrConflict) {
		return api.Rollout{}, errorf(http.StatusConflict, "rollout %s changed meanwhile; try again", ro.ID)
	} else if err != nil {
		return api.Rollout{}, err
	}
	s.audit(ctx, api.AuditEvent{Actor: who.actor(), Type: "rollout_" + action, Rollout: ro.ID, Patch: ro.Patch.ID, Message: ro.Reason})
	s.notify()
	return ro.Rollout, nil
}

// kick asks the rollout engine to look now (a device reported).
func (s *Server) kick() {
	select {
	case s.kicks <- struct{}{}:
	default:
	}
}

// drive runs the rollout engine: on a ticker and when devices report.
func (s *Server) drive() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kicks:
		}
		ros, err := s.st.Rollouts(context.Background())
		if err != nil {
			continue
		}
		for _, ro := range ros {
			if ro.State == api.StateRunning {
				s.advance(context.Background(), ro.ID)
			}
		}
		s.sampleExposure(context.Background())
	}
}

// advance moves a running rollout on as far as it can go now, and
// returns it.
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
	changed, notify := false, false
	// The audit events of the transitions, written once they are stored
	// (another replica may win the race for this rollout).
	var audits []api.AuditEvent
	audit := func(e api.AuditEvent) { audits = append(audits, e) }
	before := slices.Clone(ro.Rings)
	halt := func(ring *api.Ring) {
		ring.State = api.RingHalted
		ro.State, ro.Revert = api.StateHalted, true
		ro.Reason = fmt.Sprintf("ring %s: %s failed, more than the budget of %d; reverting where it landed", ring.Name, count(ring.Failed, "device"), ro.MaxFailures)
		audit(api.AuditEvent{Actor: "server", Type: "rollout_halted", Rollout: ro.ID, Patch: ro.Patch.ID, Message: ro.Reason})
		changed, notify = true, true
	}
	for i := range ro.Rings {
		ring := &ro.Rings[i]
		if ring.State == api.RingDone {
			// A failure that reaches the server after its ring finished
			// (a crash report still on its way when a short soak ended)
			// counts against that ring's budget while the rollout runs.
			if n := s.failedMembers(ctx, &ro, ring); n > ro.MaxFailures {
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
			var members []string
			for _, d := range devices {
				if d.Revoked.IsZero() && (ring.Name == "all" || d.Labels["ring"] == ring.Name) {
					members = append(members, d.ID)
				}
			}
			ro.Members[ring.Name] = members
			ring.State, ring.Started, ring.Devices = api.RingActive, now, len(members)
			changed, notify = true, true
			audit(api.AuditEvent{Actor: "server", Type: "ring_started", Rollout: ro.ID, Patch: ro.Patch.ID, Message: fmt.Sprintf("ring %s: %s", ring.Name, count(len(members), "device"))})
		}
		s.count(ctx, &ro, ring, devices)
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
	if changed {
		ro.Updated = now
		if now.Equal(prev) {
			ro.Updated = now.Add(time.Nanosecond)
		}
		if err := s.st.UpdateRollout(ctx, ro, prev); errors.Is(err, store.ErrConflict) {
			cur, err := s.st.Rollout(ctx, id) // another replica moved it on
			return cur.Rollout, err
		} else if err != nil {
			return ro.Rollout, err
		}
		if notify {
			s.notify() // the devices first: their desired state changed
		}
		for _, e := range audits {
			s.audit(ctx, e)
		}
		s.touch()
	}
	return ro.Rollout, nil
}

// count fills a ring's counters from its devices' inventories and events.
func (s *Server) count(ctx context.Context, ro *store.Rollout, ring *api.Ring, devices []store.Device) {
	byID := map[string]store.Device{}
	for _, d := range devices {
		byID[d.ID] = d
	}
	ring.Applied, ring.NotNeeded, ring.Failed, ring.Pending = 0, 0, 0, 0
	failed, _ := s.st.DevicesWithEvents(ctx, ro.Patch.ID, ring.Started, failureTypes)
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
}

// failedMembers counts the devices of a started ring that reported a
// failure of the rollout's patch since the ring started.
func (s *Server) failedMembers(ctx context.Context, ro *store.Rollout, ring *api.Ring) int {
	failed, err := s.st.DevicesWithEvents(ctx, ro.Patch.ID, ring.Started, failureTypes)
	if err != nil {
		return 0
	}
	n := 0
	for _, id := range ro.Members[ring.Name] {
		if failed[id] {
			n++
		}
	}
	return n
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
func memberState(d store.Device, p api.PatchInfo, started time.Time, failed bool) string {
	if failed {
		return memberFailed
	}
	switch state, _ := exposure(d, p); {
	case d.InventoryAt.Before(started):
		return memberPending // not heard from since the ring started
	case state == "protected":
		return memberApplied
	case state == "":
		return memberNotNeeded
	}
	return memberPending
}

// exposure tells, from a device's inventory, where it stands against one
// patch: "" (no process runs the target build), "protected" (every such
// process carries it), "vulnerable"; and whether the target module
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
	case patched == mapped:
		return "protected", changedOnDisk
	}
	return "vulnerable", changedOnDisk
}

// desired is a device's desired state: for every rollout whose started
// rings include it, apply (or revert, after a rollback or a halt on
// failures). The newest rollout of a patch id decides.
func (s *Server) desired(ctx context.Context, d store.Device, seq int64, changed bool) (any, error) {
	rc, err := s.rolloutsAt(ctx, seq)
	if err != nil {
		return nil, err
	}
	resp := api.SyncResponse{Cursor: seq, Changed: changed, Patches: []api.DesiredPatch{}, Resync: s.cfg.Resync}
	byID := map[string]int{}
	for i, ro := range rc.ros { // oldest first: a newer rollout of the same id replaces
		if !rc.members[i][d.ID] {
			continue
		}
		action := api.ActionApply
		if ro.Revert {
			action = api.ActionRevert
		}
		dp := api.DesiredPatch{ID: ro.Patch.ID, Version: ro.Patch.Version, SHA256: ro.Patch.SHA256, Action: action, Rollout: ro.ID, TargetBuildID: ro.Patch.TargetBuildID}
		if j, ok := byID[dp.ID]; ok {
			resp.Patches[j] = dp
			continue
		}
		byID[dp.ID] = len(resp.Patches)
		resp.Patches = append(resp.Patches, dp)
	}
	return resp, nil
}

// rolloutCache is the rollouts as of one value of the change counter,
// with the devices of their started rings: what every sync answer needs,
// read once per change rather than once per device (a change wakes every
// long-poll of the fleet at once).
type rolloutCache struct {
	seq     int64
	ros     []store.Rollout
	members []map[string]bool
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
		m := map[string]bool{}
		for _, ring := range ro.Rings {
			if ring.State != api.RingPending && ring.State != api.RingWaiting {
				for _, id := range ro.Members[ring.Name] {
					m[id] = true
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
				if st == "vulnerable" || (st == "protected" && worst == "") {
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
	devices, _ := s.st.Devices(ctx)
	ros, _ := s.st.Rollouts(ctx)
	patches, _ := s.st.Patches(ctx)
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
