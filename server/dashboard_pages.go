package server

import (
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/store"
)

// onlineWithin: a device heard from this recently is online (agents
// long-poll every 30 s).
const onlineWithin = 2 * time.Minute

// hostRow is a device as the dashboard lists it.
type hostRow struct {
	api.Device
	Online     bool
	Vulnerable []string // CVEs some process of it is exposed to
	Protected  []string // CVEs it is protected against in memory
	Labels     []string // k=v, sorted
}

func hostRows(devices []store.Device, patches []api.PatchInfo, now time.Time) []hostRow {
	var out []hostRow
	for _, d := range devices {
		h := hostRow{Device: d.Device, Online: d.Revoked.IsZero() && now.Sub(d.LastSeen) < onlineWithin}
		for k, v := range d.Labels {
			h.Labels = append(h.Labels, k+"="+v)
		}
		sort.Strings(h.Labels)
		vuln, prot := map[string]bool{}, map[string]bool{}
		for _, p := range patches {
			st, _ := exposure(d, p)
			for _, c := range p.CVEs {
				switch st {
				case "vulnerable", "restart_needed":
					vuln[c] = true
				case "protected":
					prot[c] = true
				}
			}
		}
		for c := range vuln {
			h.Vulnerable = append(h.Vulnerable, c)
		}
		for c := range prot {
			if !vuln[c] {
				h.Protected = append(h.Protected, c)
			}
		}
		sort.Strings(h.Vulnerable)
		sort.Strings(h.Protected)
		out = append(out, h)
	}
	return out
}

type overviewData struct {
	Hosts, Online, Revoked int
	Affected, Safe         int // devices running a build some CVE patch targets; of those, exposed to none
	SafePercent            int
	CVEs                   []api.CVEReport
	OpenCVEs               int
	Chart                  chart
	Active                 []rolloutRow
	Running                int
}

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request, u user) error {
	ctx := r.Context()
	fl, err := s.fleet(ctx)
	if err != nil {
		return err
	}
	devices, patches := fl.devices, fl.patches
	ros, err := s.st.Rollouts(ctx)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	var d overviewData
	for _, h := range hostRows(devices, patches, now) {
		if !h.Revoked.IsZero() {
			d.Revoked++
			continue
		}
		d.Hosts++
		if h.Online {
			d.Online++
		}
		if len(h.Vulnerable)+len(h.Protected) > 0 {
			d.Affected++
			if len(h.Vulnerable) == 0 {
				d.Safe++
			}
		}
	}
	if d.Affected > 0 {
		d.SafePercent = d.Safe * 100 / d.Affected
	}
	d.CVEs = cveReport(patches, devices, "").CVEs
	for _, c := range d.CVEs {
		if c.Vulnerable > 0 {
			d.OpenCVEs++
		}
	}
	samples, err := s.st.Exposure(ctx, now.Add(-chartSpan))
	if err != nil {
		return err
	}
	d.Chart = exposureChart(samples, d.CVEs, now)
	for i := len(ros) - 1; i >= 0; i-- {
		ro := ros[i]
		if ro.State == api.StateRunning {
			d.Running++
		}
		if ro.State == api.StateRunning || ro.State == api.StateHalted || now.Sub(ro.Updated) < time.Hour {
			d.Active = append(d.Active, newRolloutRow(ro))
		}
	}
	s.render(w, r, http.StatusOK, "overview", view{Title: "Fleet overview", Section: "overview", User: u, Data: d})
	return nil
}

// rolloutRow is a rollout with what its rows show.
type rolloutRow struct {
	store.Rollout
	Rings []ringRow
}

type ringRow struct {
	api.Ring
	Bar bar
}

func newRolloutRow(ro store.Rollout) rolloutRow {
	row := rolloutRow{Rollout: ro}
	for _, ring := range ro.Rings {
		row.Rings = append(row.Rings, ringRow{Ring: ring, Bar: newBar(ring)})
	}
	return row
}

// bar is a ring's progress as a stacked bar (widths in percent).
type bar struct {
	Applied, NotNeeded, Failed, Pending float64
	Label                               string // the same in words
}

func newBar(r api.Ring) bar {
	if r.Devices == 0 {
		label := "no devices yet"
		if r.State != api.RingPending && r.State != api.RingWaiting {
			label = "no devices in this ring"
		}
		return bar{Label: label}
	}
	n := float64(r.Devices)
	return bar{
		Applied: 100 * float64(r.Applied) / n, NotNeeded: 100 * float64(r.NotNeeded) / n,
		Failed: 100 * float64(r.Failed) / n, Pending: 100 * float64(r.Pending) / n,
		Label: fmt.Sprintf("%d of %d applied, %d not needed, %d failed, %d pending", r.Applied, r.Devices, r.NotNeeded, r.Failed, r.Pending),
	}
}

func (s *Server) rolloutsPage(w http.ResponseWriter, r *http.Request, u user) error {
	ros, err := s.st.Rollouts(r.Context())
	if err != nil {
		return err
	}
	var rows []rolloutRow
	for i := len(ros) - 1; i >= 0; i-- {
		rows = append(rows, newRolloutRow(ros[i]))
	}
	s.render(w, r, http.StatusOK, "rollouts", view{Title: "Rollouts", Section: "rollouts", User: u, Data: rows})
	return nil
}

type rolloutData struct {
	rolloutRow
	Members   []memberRow
	Events    []api.AuditEvent
	CanResume bool
	// Keeping: the started rings of a halted rollout that keep the patch
	// (they finished, or were not the ring that failed) until an
	// operator rolls them back, or not.
	Keeping []string
}

type memberRow struct {
	Ring, Device, Name, State string
}

func (s *Server) rolloutPage(w http.ResponseWriter, r *http.Request, u user) error {
	return s.renderRollout(w, r, u, r.PathValue("id"), http.StatusOK, "")
}

// renderRollout writes a rollout's page, with an error when an action on
// it was refused (the page stays, the reason is on it).
func (s *Server) renderRollout(w http.ResponseWriter, r *http.Request, u user, id string, status int, msg string) error {
	ctx := r.Context()
	ro, err := s.st.Rollout(ctx, id)
	if err != nil {
		return fmt.Errorf("rollout %q: %w", id, err)
	}
	fl, err := s.fleet(ctx)
	if err != nil {
		return err
	}
	byID := map[string]store.Device{}
	for _, d := range fl.devices {
		byID[d.ID] = d
	}
	d := rolloutData{rolloutRow: newRolloutRow(ro), CanResume: ro.State == api.StateHalted && !reverting(ro)}
	for _, ring := range ro.Rings {
		if ring.State == api.RingPending || ring.State == api.RingWaiting {
			continue
		}
		if ro.State == api.StateHalted && !ro.Revert && !ring.Revert {
			d.Keeping = append(d.Keeping, ring.Name)
		}
		failed, err := s.st.DevicesWithEvents(ctx, ro.Patch.ID, ring.Started, failureTypes)
		if err != nil {
			return err
		}
		for _, id := range ro.Members[ring.Name] {
			dev := byID[id]
			d.Members = append(d.Members, memberRow{Ring: ring.Name, Device: id, Name: dev.Name, State: memberState(dev, ro.Patch, ring.Started, failed[id])})
		}
	}
	if d.Events, err = s.st.FindEvents(ctx, store.EventFilter{Rollout: ro.ID, Limit: 50}); err != nil {
		return err
	}
	v := view{Title: "Rollout " + ro.ID, Section: "rollouts", User: u, Data: d, Error: msg}
	if did := r.URL.Query().Get("did"); did != "" && msg == "" {
		v.Notice = map[string]string{"start": "Rollout started.", "halt": "Rollout halted.", "resume": "Rollout resumed.", "rollback": "Rollback ordered: the devices where it landed take it off."}[did]
	}
	s.render(w, r, status, "rollout", v)
	return nil
}

// rolloutForm is the form that starts a rollout, as typed.
type rolloutForm struct {
	Patch, Rings, Soak, MaxFailures, Windows string
	Critical                                 bool
	Patches                                  []api.PatchInfo
	RingNames                                []ringName
}

type ringName struct {
	Name    string
	Devices int
}

func (s *Server) newRolloutPage(w http.ResponseWriter, r *http.Request, u user) error {
	f := rolloutForm{Patch: r.URL.Query().Get("patch"), Soak: "0s", MaxFailures: "0"}
	return s.renderRolloutForm(w, r, u, f, http.StatusOK, "")
}

func (s *Server) renderRolloutForm(w http.ResponseWriter, r *http.Request, u user, f rolloutForm, status int, msg string) error {
	fl, err := s.fleet(r.Context())
	if err != nil {
		return err
	}
	f.Patches = slices.Clone(fl.patches)
	slices.Reverse(f.Patches) // newest first
	counts := map[string]int{}
	all := 0
	for _, d := range fl.devices {
		if d.Revoked.IsZero() {
			all++
			if ring := d.Ring; ring != "" && !d.Approved.IsZero() {
				counts[ring]++
			}
		}
	}
	for name, n := range counts {
		f.RingNames = append(f.RingNames, ringName{name, n})
	}
	// The suggested order: a ring named canary first, then the smallest
	// rings (early rings are the small ones).
	sort.Slice(f.RingNames, func(i, j int) bool {
		a, b := f.RingNames[i], f.RingNames[j]
		if ca, cb := strings.Contains(a.Name, "canary"), strings.Contains(b.Name, "canary"); ca != cb {
			return ca
		}
		return a.Devices < b.Devices || a.Devices == b.Devices && a.Name < b.Name
	})
	f.RingNames = append(f.RingNames, ringName{"all", all})
	if f.Rings == "" {
		var names []string
		for _, rn := range f.RingNames[:len(f.RingNames)-1] {
			names = append(names, rn.Name)
		}
		f.Rings = strings.Join(names, ",")
		if f.Rings == "" {
			f.Rings = "all" // no host has a ring label
		}
	}
	s.render(w, r, status, "newrollout", view{Title: "New rollout", Section: "rollouts", User: u, Error: msg, Data: f})
	return nil
}

func (s *Server) newRolloutForm(w http.ResponseWriter, r *http.Request, u user) error {
	f := rolloutForm{
		Patch: r.PostFormValue("patch"), Rings: r.PostFormValue("rings"), Soak: r.PostFormValue("soak"),
		MaxFailures: r.PostFormValue("max_failures"), Windows: r.PostFormValue("windows"), Critical: r.PostFormValue("critical") != "",
	}
	req := api.RolloutRequest{Patch: f.Patch, Critical: f.Critical}
	bad := func(format string, args ...any) error {
		return s.renderRolloutForm(w, r, u, f, http.StatusBadRequest, fmt.Sprintf(format, args...))
	}
	if req.Patch == "" {
		return bad("Choose a patch.")
	}
	for _, ring := range strings.FieldsFunc(f.Rings, func(c rune) bool { return c == ',' || c == ' ' }) {
		req.Rings = append(req.Rings, ring)
	}
	if len(req.Rings) == 0 {
		return bad("Give at least one ring, such as canary,broad (or all).")
	}
	var err error
	if strings.TrimSpace(f.Soak) != "" {
		if req.Soak, err = time.ParseDuration(strings.TrimSpace(f.Soak)); err != nil || req.Soak < 0 {
			return bad("Soak %q is not a duration such as 30m or 2h.", f.Soak)
		}
	}
	if strings.TrimSpace(f.MaxFailures) != "" {
		if req.MaxFailures, err = strconv.Atoi(strings.TrimSpace(f.MaxFailures)); err != nil || req.MaxFailures < 0 {
			return bad("Failure budget %q is not a whole number of devices.", f.MaxFailures)
		}
	}
	for _, line := range strings.Split(f.Windows, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		ring, w, ok := strings.Cut(line, "=")
		if !ok {
			return bad("Window %q: write RING=HH:MM-HH:MM.", line)
		}
		if req.Windows == nil {
			req.Windows = map[string]string{}
		}
		req.Windows[strings.TrimSpace(ring)] = strings.TrimSpace(w)
	}
	ro, err := s.newRollout(r.Context(), u.identity, req)
	if err != nil {
		status := http.StatusInternalServerError
		if he, ok := err.(*httpError); ok {
			status = he.status
		}
		return s.renderRolloutForm(w, r, u, f, status, capitalize(err.Error())+".")
	}
	http.Redirect(w, r, "/ui/rollouts/"+ro.ID+"?did=start", http.StatusSeeOther)
	return nil
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// confirmData is the page that asks before an action (without the
// script; with it, a dialog asks).
type confirmData struct {
	Question, Detail, Action, Button, Back string
	Danger                                 bool
	Rings                                  string // a rollback of these rings only
}

// steerActions are the rollout actions and how the dashboard asks.
var steerActions = map[string]struct{ question, detail, button string }{
	"halt":     {"Halt rollout %s?", "No further devices get the patch; those that have it keep it. You can resume later.", "Halt rollout"},
	"resume":   {"Resume rollout %s?", "The rollout goes on from the ring where it stopped.", "Resume rollout"},
	"rollback": {"Roll back rollout %s?", "Every device where the patch landed takes it off again. This cannot be resumed.", "Roll back"},
}

func (s *Server) steerForm(w http.ResponseWriter, r *http.Request, u user) error {
	id, action := r.PathValue("id"), r.PathValue("action")
	a, ok := steerActions[action]
	if !ok {
		return errorf(http.StatusNotFound, "no action %q: halt, resume or rollback", action)
	}
	ro, err := s.st.Rollout(r.Context(), id)
	if err != nil {
		return fmt.Errorf("rollout %q: %w", id, err)
	}
	var rings []string
	if v := r.FormValue("rings"); v != "" && action == "rollback" {
		rings = strings.Split(v, ",")
	}
	if r.Method == http.MethodGet || r.PostFormValue("confirm") != "yes" {
		q, detail := fmt.Sprintf(a.question, ro.ID), a.detail
		if len(rings) > 0 {
			q = fmt.Sprintf("Roll back rings %s of rollout %s?", strings.Join(rings, ","), ro.ID)
			detail = "The hosts of these rings take the patch off again; the other rings keep it."
		}
		s.render(w, r, http.StatusOK, "confirm", view{Title: "Confirm", Section: "rollouts", User: u, Data: confirmData{
			Question: q, Detail: detail, Action: r.URL.Path, Button: a.button,
			Back: "/ui/rollouts/" + ro.ID, Danger: action != "resume", Rings: strings.Join(rings, ",")}})
		return nil
	}
	if _, err := s.steer(r.Context(), u.identity, id, action, rings); err != nil {
		if he, ok := err.(*httpError); ok && he.status == http.StatusConflict {
			return s.renderRollout(w, r, u, id, he.status, capitalize(he.msg)+".")
		}
		return err
	}
	http.Redirect(w, r, "/ui/rollouts/"+ro.ID+"?did="+action, http.StatusSeeOther)
	return nil
}

func (s *Server) patchesPage(w http.ResponseWriter, r *http.Request, u user) error {
	patches, err := s.st.Patches(r.Context())
	if err != nil {
		return err
	}
	slices.Reverse(patches)
	s.render(w, r, http.StatusOK, "patches", view{Title: "Patch catalog", Section: "patches", User: u, Data: patches})
	return nil
}

func (s *Server) hostsPage(w http.ResponseWriter, r *http.Request, u user) error {
	fl, err := s.fleet(r.Context())
	if err != nil {
		return err
	}
	s.render(w, r, http.StatusOK, "hosts", view{Title: "Hosts", Section: "hosts", User: u, Data: hostRows(fl.devices, fl.patches, time.Now())})
	return nil
}

type hostData struct {
	hostRow
	InventoryAt time.Time
	Eligibility []api.Finding // what on the host keeps the agent from patching
	Processes   []processRow
	Events      []api.AuditEvent
}

type processRow struct {
	api.Process
	Targets []string // patches in the catalog whose target this process maps
}

func (s *Server) hostPage(w http.ResponseWriter, r *http.Request, u user) error {
	ctx := r.Context()
	d, err := s.st.Device(ctx, r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("host %q: %w", r.PathValue("id"), err)
	}
	patches, err := s.st.Patches(ctx)
	if err != nil {
		return err
	}
	hd := hostData{hostRow: hostRows([]store.Device{d}, patches, time.Now())[0], InventoryAt: d.InventoryAt, Eligibility: d.Inventory.Eligibility}
	for _, p := range d.Inventory.Processes {
		pr := processRow{Process: p}
		for _, m := range p.Modules {
			for _, pi := range patches {
				if m.BuildID == pi.TargetBuildID && !slices.Contains(pr.Targets, pi.ID) {
					pr.Targets = append(pr.Targets, pi.ID)
				}
			}
		}
		hd.Processes = append(hd.Processes, pr)
	}
	if hd.Events, err = s.st.FindEvents(ctx, store.EventFilter{Device: d.ID, Limit: 50}); err != nil {
		return err
	}
	v := view{Title: "Host " + d.Name, Section: "hosts", User: u, Data: hd}
	switch r.URL.Query().Get("did") {
	case "revoke":
		v.Notice = "Host revoked: its certificate no longer works here."
	case "approve":
		v.Notice = "Host approved into ring " + d.Ring + ": rollouts count it from their next ring on."
	}
	s.render(w, r, http.StatusOK, "host", v)
	return nil
}

func (s *Server) revokeForm(w http.ResponseWriter, r *http.Request, u user) error {
	d, err := s.st.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return fmt.Errorf("host %q: %w", r.PathValue("id"), err)
	}
	if r.Method == http.MethodGet || r.PostFormValue("confirm") != "yes" {
		s.render(w, r, http.StatusOK, "confirm", view{Title: "Confirm", Section: "hosts", User: u, Data: confirmData{
			Question: fmt.Sprintf("Revoke host %s?", d.Name), Detail: "Its certificate stops working here at once; to come back it must enroll again.",
			Action: r.URL.Path, Button: "Revoke host", Back: "/ui/hosts/" + d.ID, Danger: true}})
		return nil
	}
	if _, err := s.revokeDevice(r.Context(), u.identity, d.ID); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/hosts/"+d.ID+"?did=revoke", http.StatusSeeOther)
	return nil
}

// approveForm approves a host into a ring, or moves it to another (not
// destructive: no confirmation).
func (s *Server) approveForm(w http.ResponseWriter, r *http.Request, u user) error {
	d, err := s.approveDevice(r.Context(), u.identity, r.PathValue("id"), strings.TrimSpace(r.PostFormValue("ring")))
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/hosts/"+d.ID+"?did=approve", http.StatusSeeOther)
	return nil
}

type eventsData struct {
	Filter  store.EventFilter
	Types   []string
	Devices []api.Device
	Events  []api.AuditEvent
	Older   template.URL // the next page back, or ""
	Paged   bool         // an older page: not refreshed live
}

// eventsPageSize is how many events a page of the log shows.
const eventsPageSize = 100

func (s *Server) eventsPage(w http.ResponseWriter, r *http.Request, u user) error {
	ctx := r.Context()
	q := r.URL.Query()
	f := store.EventFilter{Type: q.Get("type"), Device: q.Get("device"), Rollout: strings.TrimSpace(q.Get("rollout")),
		Patch: strings.TrimSpace(q.Get("patch")), Actor: strings.TrimSpace(q.Get("actor")), Text: strings.TrimSpace(q.Get("q")), Limit: eventsPageSize}
	f.Before, _ = strconv.ParseInt(q.Get("before"), 10, 64)
	d := eventsData{Filter: f, Paged: f.Before > 0}
	var err error
	if d.Events, err = s.st.FindEvents(ctx, f); err != nil {
		return err
	}
	if d.Types, err = s.st.EventTypes(ctx); err != nil {
		return err
	}
	if d.Devices, err = s.st.DeviceNames(ctx); err != nil {
		return err
	}
	if len(d.Events) == eventsPageSize {
		q.Set("before", strconv.FormatInt(d.Events[len(d.Events)-1].Seq, 10))
		d.Older = template.URL("/ui/events?" + q.Encode())
	}
	s.render(w, r, http.StatusOK, "events", view{Title: "Event log", Section: "events", User: u, Data: d})
	return nil
}
