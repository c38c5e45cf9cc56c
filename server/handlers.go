package server

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
	"github.com/hotpatch/hotpatch/server/store"
)

// httpError is an error with its HTTP status.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status, fmt.Sprintf(format, args...)}
}

// handler is an API handler: it returns the value to send as JSON, or an
// error (an *httpError for its status; anything else is a 500).
type handler func(r *http.Request, who identity) (any, error)

// identity is who made a request: an admin token's role and name, or a
// device.
type identity struct {
	role   string
	name   string
	token  string // the token's hash
	device store.Device
}

func (i identity) actor() string {
	if i.device.ID != "" {
		return "device:" + i.device.ID
	}
	return "token:" + i.name
}

var roleRank = map[string]int{api.RoleViewer: 1, api.RoleOperator: 2, api.RoleAdmin: 3}

// route is one endpoint: how it is served and how docs/openapi.json
// describes it (both come from this table, so they cannot drift apart).
type route struct {
	method, path string
	auth         string // "", "device" or the least admin role
	summary      string
	req, resp    any // JSON types (nil: none); []byte: a file; string: text
	h            func(s *Server) handler
}

var routeTable = []route{
	{"POST", api.PathEnroll, "", "Enroll a device with the enrollment token and a CSR", api.EnrollRequest{}, api.EnrollResponse{}, func(s *Server) handler { return s.enroll }},
	{"GET", api.PathDeviceSync, "device", "Long-poll the device's desired state (?cursor=N&wait=30s)", nil, api.SyncResponse{}, func(s *Server) handler { return s.sync }},
	{"GET", api.PathDevicePatch + "{sha}", "device", "Download a patch file by SHA-256", nil, []byte{}, func(s *Server) handler { return s.patchFile }},
	{"POST", api.PathDeviceReport, "device", "Report the device's inventory", api.Inventory{}, nil, func(s *Server) handler { return s.inventory }},
	{"POST", api.PathDeviceEvents, "device", "Send the agent's events", api.DeviceEvents{}, nil, func(s *Server) handler { return s.deviceEvents }},
	{"POST", api.PathPatches, api.RoleOperator, "Publish a signed patch file", []byte{}, api.PatchInfo{}, func(s *Server) handler { return s.publish }},
	{"GET", api.PathPatches, api.RoleViewer, "List the catalog", nil, []api.PatchInfo{}, func(s *Server) handler { return s.patches }},
	{"POST", api.PathRollouts, api.RoleOperator, "Start a rollout", api.RolloutRequest{}, api.Rollout{}, func(s *Server) handler { return s.startRollout }},
	{"GET", api.PathRollouts, api.RoleViewer, "List the rollouts", nil, []api.Rollout{}, func(s *Server) handler { return s.rollouts }},
	{"GET", api.PathRollout + "{id}", api.RoleViewer, "A rollout and its progress per ring", nil, api.Rollout{}, func(s *Server) handler { return s.rollout }},
	{"POST", api.PathRollout + "{id}/{action}", api.RoleOperator, "halt, resume or rollback a rollout (rollback ?rings=A,B: only those rings)", nil, api.Rollout{}, func(s *Server) handler { return s.rolloutAction }},
	{"GET", api.PathDevices, api.RoleViewer, "List the devices", nil, []api.Device{}, func(s *Server) handler { return s.devices }},
	{"POST", api.PathDevice + "{id}/revoke", api.RoleAdmin, "Revoke a device", nil, api.Device{}, func(s *Server) handler { return s.revoke }},
	{"POST", api.PathDevice + "{id}/approve", api.RoleOperator, "Approve a device into a ring, or move it to another (its rollouts count it from then on)", api.ApproveRequest{}, api.Device{}, func(s *Server) handler { return s.approve }},
	{"GET", api.PathReport, api.RoleViewer, "Per-CVE report (?cve=ID)", nil, api.Report{}, func(s *Server) handler { return s.report }},
	{"GET", api.PathEvents, api.RoleViewer, "The audit log, oldest first (?after=SEQ&limit=N; filters: type, device, rollout, patch, actor, q)", nil, []api.AuditEvent{}, func(s *Server) handler { return s.events }},
	{"POST", api.PathTokens, api.RoleAdmin, "Make an admin token with a role, or an enrollment token (role enroll: ring, uses, ttl)", api.TokenRequest{}, api.TokenResponse{}, func(s *Server) handler { return s.newToken }},
	{"POST", api.PathTokenRotate, api.RoleAdmin, "Replace the data directory's admin or enrollment token (the old one stops working)", api.RotateRequest{}, api.TokenResponse{}, func(s *Server) handler { return s.rotateToken }},
	{"GET", api.PathTokens, api.RoleAdmin, "List the tokens (never their values)", nil, []api.TokenInfo{}, func(s *Server) handler { return s.tokens }},
	{"DELETE", api.PathToken + "{id}", api.RoleAdmin, "Revoke a token (its dashboard sessions end)", nil, api.TokenInfo{}, func(s *Server) handler { return s.revokeToken }},
	{"GET", api.PathMetrics, api.RoleViewer, "Prometheus metrics", nil, "", func(s *Server) handler { return s.metricsText }},
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathHealth, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	for _, rt := range routeTable {
		h := s.api(rt.auth, rt.h(s))
		if rt.auth == "" {
			h = s.unauthenticated(h)
		}
		mux.Handle(rt.method+" "+rt.path, h)
	}
	s.dashboardRoutes(mux)
	return s.guard(mux)
}

// writeError sends an api.Error.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.Error{Error: strings.ReplaceAll(msg, "\n", " ")})
}

// api wraps a handler with authentication: need is "" (the handler checks
// the enrollment token itself), "device" (a valid, unrevoked client
// certificate), or the least admin role.
func (s *Server) api(need string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := s.authenticate(r, need)
		if err == nil && need != "" && r.ContentLength != 0 {
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(authenticatedBodyTimeout))
		}
		var v any
		if err == nil {
			v, err = h(r, who)
		}
		if err != nil {
			var he *httpError
			status := http.StatusInternalServerError
			if errors.As(err, &he) {
				status = he.status
			} else if errors.Is(err, store.ErrNotFound) {
				status = http.StatusNotFound
			} else if r.Context().Err() == nil {
				s.log.Printf("%s %s: %v", r.Method, r.URL.Path, err)
			}
			writeError(w, status, err.Error())
			return
		}
		switch v := v.(type) {
		case nil:
			w.WriteHeader(http.StatusNoContent)
		case rawBody:
			w.Header().Set("Content-Type", v.contentType)
			w.Write(v.data)
		default:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		}
	})
}

// rawBody is a non-JSON answer.
type rawBody struct {
	contentType string
	data        []byte
}

func (s *Server) authenticate(r *http.Request, need string) (identity, error) {
	switch need {
	case "":
		return identity{}, nil
	case "device":
		id, serial, err := pki.DeviceID(r.TLS)
		if err != nil {
			return identity{}, errorf(http.StatusUnauthorized, "a device certificate is needed (enroll first)")
		}
		known, revoked, err := s.st.DeviceAuth(r.Context(), id)
		if err != nil || known != serial {
			return identity{}, errorf(http.StatusUnauthorized, "device %s is not enrolled here", id)
		}
		if !revoked.IsZero() {
			return identity{}, errorf(http.StatusForbidden, "device %s was revoked on %s", id, revoked.Format(time.RFC3339))
		}
		var d store.Device
		d.ID = id
		return identity{device: d}, nil
	}
	tok, ok := strings.CutPrefix(r.Header.Get(api.HeaderAuthorization), "Bearer ")
	if !ok || tok == "" {
		return identity{}, errorf(http.StatusUnauthorized, "a bearer token is needed (HOTPATCH_TOKEN)")
	}
	t, err := s.st.TokenByHash(r.Context(), pki.TokenHash(tok))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return identity{}, fmt.Errorf("checking the token: %w", err)
	}
	if err != nil || roleRank[t.Role] == 0 {
		// A valid token works from a blocked address too: admins behind
		// the same address as an attacker are not locked out.
		if s.authFails.blocked(source(r), time.Now()) {
			return identity{}, errorf(http.StatusTooManyRequests, "too many unknown tokens from this address; wait a minute")
		}
		s.authFailed(r, "unknown bearer token")
		return identity{}, errorf(http.StatusUnauthorized, "unknown token")
	}
	if roleRank[t.Role] < roleRank[need] {
		return identity{}, errorf(http.StatusForbidden, "token %s has role %s; this needs %s", t.Name, t.Role, need)
	}
	return identity{role: t.Role, name: t.Name, token: t.Hash}, nil
}

func decode(r *http.Request, v any) error {
	return decodeMax(r, v, 16<<20)
}

// decodeMax reads a JSON body of at most max bytes.
func decodeMax(r *http.Request, v any, max int64) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "bad request body: %v", err)
	}
	return nil
}

// audit appends to the audit log. It is written even when the client
// that caused it has gone (its request's context is cancelled): an
// action that happened is recorded. A failure is logged and returned.
func (s *Server) audit(ctx context.Context, e api.AuditEvent) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_, err := s.st.AddEvent(ctx, e)
	if err != nil {
		s.log.Printf("audit log: could not record %s by %s (%s): %v", e.Type, e.Actor, e.Message, err)
	}
	s.dashboardChanged()
	return err
}

// authFailed counts a failed authentication from the request's address
// and records the first ones of each minute in the audit log.
func (s *Server) authFailed(r *http.Request, what string) {
	src := source(r)
	if n := s.authFails.fail(src, time.Now()); n <= 3 {
		s.audit(r.Context(), api.AuditEvent{Actor: "address:" + src, Type: "auth_failed", Message: fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, what)})
	} else if n == s.cfg.AuthFailures {
		s.audit(r.Context(), api.AuditEvent{Actor: "address:" + src, Type: "auth_failed", Message: fmt.Sprintf("%d failures within a minute; refusing this address for the rest of it", n)})
	}
}

// enroll makes a device of an agent that holds an enrollment token. A
// token bound to a ring puts the device in it, approved; otherwise the
// device waits for an operator (hotpatch fleet devices approve): the
// ring label it sends is shown as its request, never obeyed.
func (s *Server) enroll(r *http.Request, _ identity) (any, error) {
	var req api.EnrollRequest
	if err := decodeMax(r, &req, 64<<10); err != nil {
		return nil, err
	}
	now := time.Now()
	t, err := s.st.UseEnrollToken(r.Context(), pki.TokenHash(req.Token), api.RoleEnroll, now)
	if err != nil && s.authFails.blocked(source(r), now) {
		return nil, errorf(http.StatusTooManyRequests, "too many bad enrollment tokens from this address; wait a minute")
	}
	switch {
	case errors.Is(err, store.ErrTokenSpent):
		s.authFailed(r, "enrollment with an expired or used-up token "+t.Name)
		return nil, errorf(http.StatusUnauthorized, "the enrollment token expired or was used up; ask for a new one (hotpatch fleet token create --role enroll)")
	case errors.Is(err, store.ErrNotFound):
		s.authFailed(r, "enrollment with an unknown token")
		return nil, errorf(http.StatusUnauthorized, "bad enrollment token")
	case err != nil:
		return nil, err
	}
	for _, f := range []string{req.Name, req.Hostname, req.Kernel} {
		if len(f) > 256 {
			return nil, errorf(http.StatusBadRequest, "name, hostname and kernel are at most 256 bytes")
		}
	}
	if len(req.Labels) > 32 {
		return nil, errorf(http.StatusBadRequest, "at most 32 labels")
	}
	id := newID("dev-")
	cert, serial, err := s.ca.Issue([]byte(req.CSR), id)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	name := req.Name
	if name == "" {
		name = req.Hostname
	}
	d := store.Device{Serial: serial}
	d.ID, d.Name, d.Hostname, d.Kernel, d.Labels, d.Enrolled = id, name, req.Hostname, req.Kernel, req.Labels, now
	if t.Ring != "" {
		d.Ring, d.Approved = t.Ring, now
	}
	if err := s.st.AddDevice(r.Context(), d); err != nil {
		return nil, err
	}
	var labels []string
	for k, v := range req.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	state := "waits for approval"
	if d.Ring != "" {
		state = "ring " + d.Ring + " (token " + t.Name + ")"
	}
	s.audit(r.Context(), api.AuditEvent{Actor: "device:" + id, Type: "enrolled", Device: id,
		Message: strings.TrimSpace(fmt.Sprintf("%s (%s) %s; %s", name, req.Hostname, strings.Join(labels, " "), state))})
	s.dashboardChanged()
	return api.EnrollResponse{DeviceID: id, Cert: string(cert), CA: string(s.ca.CertPEM())}, nil
}

// approve puts a device in a ring, approved: from then on the rollouts
// whose rings start count it.
func (s *Server) approve(r *http.Request, who identity) (any, error) {
	var req api.ApproveRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return s.approveDevice(r.Context(), who, r.PathValue("id"), req.Ring)
}

// approveDevice approves a device into a ring (the API and the dashboard).
func (s *Server) approveDevice(ctx context.Context, who identity, id, ring string) (api.Device, error) {
	if err := validRingName(ring); err != nil {
		return api.Device{}, errorf(http.StatusBadRequest, "%v", err)
	}
	if ring == "all" {
		return api.Device{}, errorf(http.StatusBadRequest, `"all" is every approved device, not a ring to put one in`)
	}
	d, err := s.st.Device(ctx, id)
	if err != nil {
		return api.Device{}, fmt.Errorf("device %q: %w", id, err)
	}
	if !d.Revoked.IsZero() {
		return api.Device{}, errorf(http.StatusConflict, "device %s is revoked", id)
	}
	if err := s.st.ApproveDevice(ctx, id, ring, time.Now()); err != nil {
		return api.Device{}, fmt.Errorf("device %q: %w", id, err)
	}
	msg := fmt.Sprintf("%s: ring %s", d.Name, ring)
	if !d.Approved.IsZero() && d.Ring != ring {
		msg = fmt.Sprintf("%s: ring %s, was %s", d.Name, ring, d.Ring)
	}
	s.audit(ctx, api.AuditEvent{Actor: who.actor(), Type: "device_approved", Device: id, Message: msg})
	s.driveSoon()
	d, err = s.st.Device(ctx, id)
	return d.Device, err
}

// sync is the long-poll: it answers at once when the desired state
// changed since the device's cursor, or when it changes within wait.
func (s *Server) sync(r *http.Request, who identity) (any, error) {
	cursor, _ := strconv.ParseInt(r.URL.Query().Get("cursor"), 10, 64)
	wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil || wait <= 0 || wait > 5*time.Minute {
		wait = 30 * time.Second
	}
	if err := s.st.Seen(r.Context(), who.device.ID, time.Now()); err != nil && r.Context().Err() == nil {
		return nil, fmt.Errorf("recording that device %s was seen: %w", who.device.ID, err)
	}
	s.metrics.longPolls.Add(1)
	defer s.metrics.longPolls.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	if n, err := s.st.Change(r.Context()); err == nil {
		s.sawChange(n) // a change made on another replica a moment ago
	}
	for {
		s.seqMu.Lock()
		seq, ch := s.seq, s.changed
		s.seqMu.Unlock()
		if seq != cursor {
			return s.desired(r.Context(), who.device, seq, true)
		}
		select {
		case <-ch:
		case <-timer.C:
			return s.desired(r.Context(), who.device, seq, false)
		case <-r.Context().Done():
			return nil, r.Context().Err()
		case <-s.stop:
			return s.desired(r.Context(), who.device, seq, false)
		}
	}
}

func (s *Server) patchFile(r *http.Request, _ identity) (any, error) {
	sha := r.PathValue("sha")
	if _, err := hex.DecodeString(sha); err != nil || len(sha) != 64 {
		return nil, errorf(http.StatusBadRequest, "%q is not a SHA-256", sha)
	}
	data, err := s.st.PatchData(r.Context(), sha)
	if err != nil {
		return nil, fmt.Errorf("patch %s: %w", sha, err)
	}
	return rawBody{"application/octet-stream", data}, nil
}

func (s *Server) inventory(r *http.Request, who identity) (any, error) {
	var inv api.Inventory
	if err := decode(r, &inv); err != nil {
		return nil, err
	}
	if err := s.st.SetInventory(r.Context(), who.device.ID, inv, time.Now()); err != nil {
		return nil, err
	}
	s.dashboardChanged()
	s.driveSoon()
	return nil, nil
}

// deviceEventTypes are the agent events the server records (see
// agent.Event); anything else is refused.
var deviceEventTypes = map[string]bool{
	"started": true, "stopped": true, "patch_loaded": true, "patch_refused": true, "patch_removed": true,
	"applied": true, "apply_failed": true, "busy": true, "not_applicable": true, "reverted": true, "revert_failed": true,
	"crash": true, "probe_failed": true, "rolled_back": true, "fallback": true, "fallback_failed": true,
	"process_exited": true, "events_lost": true, "events_dropped": true, "enrolled": true, "server_refused": true,
	"server_unreachable": true, "server_error": true, "download_failed": true, "patch_overridden": true,
	"metrics_failed": true, "state_failed": true,
	// The agent's record of its own work and of what it found
	// (docs/agent.md): a patch whose redirects are gone (lost, re-applied),
	// a damaged patch file (the last good version stays in force), a read
	// of /proc that failed (nothing destructive was done), a state
	// rebuilt from the processes.
	"apply_started": true, "revert_started": true, "patch_lost": true, "patch_damaged": true,
	"proc_unreadable": true, "state_rebuilt": true,
}

// KnownDeviceEventType reports whether the server records events of type
// typ as they are (others are recorded as unknown_event and count for
// nothing). The agent's tests check every type it sends against it.
func KnownDeviceEventType(typ string) bool { return deviceEventTypes[typ] }

// unknownEventType is the type an event of a type outside
// deviceEventTypes is recorded under (its type goes into the message).
// Decision: recorded, not refused: an agent newer than the server must
// not have its whole outbox, failures included, refused for one new
// type; and such an event never counts against a rollout's budget.
const unknownEventType = "unknown_event"

// maxDeviceEvents is how many events one report may carry; maxEventText
// how long each text field may be (longer is cut, marked with "…").
const (
	maxDeviceEvents = 1000
	maxEventText    = 2048
)

// deviceEvents records a device's events in the audit log. Each is
// stamped with the server's time of receipt (the failure budget is
// decided on it; a device's clock may be wrong, or lie); the device's
// own time is kept in the message when it differs by more than a
// minute.
func (s *Server) deviceEvents(r *http.Request, who identity) (any, error) {
	var evs api.DeviceEvents
	if err := decodeMax(r, &evs, 4<<20); err != nil {
		return nil, err
	}
	if len(evs.Events) > maxDeviceEvents {
		return nil, errorf(http.StatusRequestEntityTooLarge, "%d events in one report; send at most %d", len(evs.Events), maxDeviceEvents)
	}
	now := time.Now().UTC()
	for _, e := range evs.Events {
		msg := cut(e.Message, maxEventText)
		if !deviceEventTypes[e.Type] {
			msg = strings.TrimSuffix(fmt.Sprintf("type %q: %s", cut(e.Type, 64), msg), ": ")
			e.Type = unknownEventType
		}
		for _, part := range []string{e.Signal, e.Function, e.Error} {
			if part != "" {
				msg = strings.TrimPrefix(msg+"; "+cut(part, maxEventText), "; ")
			}
		}
		if e.PID != 0 {
			msg = strings.TrimSuffix(fmt.Sprintf("pid %d: %s", e.PID, msg), ": ")
		}
		if !e.Time.IsZero() && (e.Time.Sub(now) > time.Minute || now.Sub(e.Time) > time.Minute) {
			msg += " (device time " + e.Time.UTC().Format(time.RFC3339) + ")"
		}
		if err := s.audit(r.Context(), api.AuditEvent{Time: now, Actor: who.actor(), Type: e.Type, Device: who.device.ID, Patch: cut(e.Patch, 256), Message: msg}); err != nil {
			return nil, err // the agent sends it again
		}
	}
	s.driveSoon()
	return nil, nil
}

// cut shortens s to at most n bytes (on a rune boundary), marked with "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len("…")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

func (s *Server) publish(r *http.Request, who identity) (any, error) {
	data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 64<<20))
	if err != nil {
		return nil, errorf(http.StatusRequestEntityTooLarge, "patch file: %v", err)
	}
	p, err := patch.Load(data)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	if len(s.publishers) > 0 {
		var untrusted *patch.UntrustedSignerError
		if err := patch.Verify(p, s.publishers); errors.As(err, &untrusted) {
			return nil, errorf(http.StatusForbidden, "patch %s is signed by key %s, which is not a publisher of this server; to accept it, start hotpatch-server with --publisher KEY.pub of that key",
				p.ID, untrusted.KeyID)
		} else if err != nil {
			return nil, errorf(http.StatusForbidden, "%v", err)
		}
	}
	info := api.PatchInfo{
		SHA256: patch.FileDigest(data), ID: p.ID, Version: p.Version, CVEs: p.CVEs, Severity: string(p.Severity),
		Description: p.Description, TargetName: p.Target.Name, TargetBuildID: hex.EncodeToString(p.Target.BuildID),
		Signer: patch.KeyID(p.Signer), Size: len(data), Published: time.Now().UTC(), StartupOnly: p.StartupOnly(),
	}
	for _, f := range p.Functions {
		info.Functions = append(info.Functions, f.Name)
	}
	if old, err := s.st.Patch(r.Context(), info.SHA256); err == nil && old.SHA256 == info.SHA256 {
		return old, nil // the same file again
	}
	if other, err := s.st.PatchVersion(r.Context(), p.ID, p.Version); err == nil {
		return nil, errorf(http.StatusConflict, "patch %s level %d is already published as a different file (sha256 %s); give the new one a higher level (hotpatch build --level)",
			p.ID, p.Version, other.SHA256)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err := s.st.AddPatch(r.Context(), info, data); err != nil {
		return nil, err
	}
	s.audit(r.Context(), api.AuditEvent{Actor: who.actor(), Type: "published", Patch: p.ID, Message: fmt.Sprintf("%s level %d, %s, sha256 %s", p.ID, p.Version, strings.Join(p.CVEs, " "), info.SHA256)})
	return info, nil
}

func (s *Server) patches(r *http.Request, _ identity) (any, error) {
	ps, err := s.st.Patches(r.Context())
	if ps == nil {
		ps = []api.PatchInfo{}
	}
	return ps, err
}

func (s *Server) devices(r *http.Request, _ identity) (any, error) {
	ds, err := s.st.Devices(r.Context())
	out := []api.Device{}
	for _, d := range ds {
		out = append(out, d.Device)
	}
	return out, err
}

func (s *Server) revoke(r *http.Request, who identity) (any, error) {
	return s.revokeDevice(r.Context(), who, r.PathValue("id"))
}

// revokeDevice revokes a device (the API and the dashboard).
func (s *Server) revokeDevice(ctx context.Context, who identity, id string) (api.Device, error) {
	if err := s.st.Revoke(ctx, id, time.Now()); err != nil {
		return api.Device{}, fmt.Errorf("device %q: %w", id, err)
	}
	d, err := s.st.Device(ctx, id)
	if err != nil {
		return api.Device{}, err
	}
	s.audit(ctx, api.AuditEvent{Actor: who.actor(), Type: "revoked", Device: id, Message: d.Name})
	s.driveSoon()
	return d.Device, nil
}

func (s *Server) events(r *http.Request, _ identity) (any, error) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	q := r.URL.Query()
	if limit <= 0 {
		limit = 10000
	}
	evs, err := s.st.FindEvents(r.Context(), store.EventFilter{After: after, Limit: limit, Oldest: true,
		Type: q.Get("type"), Device: q.Get("device"), Rollout: q.Get("rollout"), Patch: q.Get("patch"), Actor: q.Get("actor"), Text: q.Get("q")})
	if evs == nil {
		evs = []api.AuditEvent{}
	}
	return evs, err
}

func (s *Server) newToken(r *http.Request, who identity) (any, error) {
	var req api.TokenRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, errorf(http.StatusBadRequest, "give the token a name (who or what it is for)")
	}
	if req.Role == api.RoleEnroll {
		return s.newEnrollToken(r.Context(), who, req)
	}
	if req.Ring != "" || req.Uses != 0 || req.TTL != 0 {
		return nil, errorf(http.StatusBadRequest, "ring, uses and ttl are for enrollment tokens (role enroll)")
	}
	tok, err := s.NewToken(req.Role, req.Name)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	s.audit(r.Context(), api.AuditEvent{Actor: who.actor(), Type: "token_created", Message: fmt.Sprintf("%s (%s)", req.Name, req.Role)})
	return api.TokenResponse{Token: tok, ID: tokenID(pki.TokenHash(tok)), Role: req.Role, Name: req.Name}, nil
}

// Enrollment tokens made by the API: how long they work by default and
// at most.
const (
	defaultEnrollTTL = 24 * time.Hour
	maxEnrollTTL     = 30 * 24 * time.Hour
)

// newEnrollToken makes an enrollment token that expires, may be limited
// in uses, and may bind its devices to a ring.
func (s *Server) newEnrollToken(ctx context.Context, who identity, req api.TokenRequest) (api.TokenResponse, error) {
	switch {
	case req.Uses < 0:
		return api.TokenResponse{}, errorf(http.StatusBadRequest, "uses %d: give 0 (no limit) or more", req.Uses)
	case req.TTL < 0 || req.TTL > maxEnrollTTL:
		return api.TokenResponse{}, errorf(http.StatusBadRequest, "ttl %v: give a duration up to %v (0: %v)", req.TTL, maxEnrollTTL, defaultEnrollTTL)
	}
	if req.Ring != "" {
		if err := validRingName(req.Ring); err != nil || req.Ring == "all" {
			return api.TokenResponse{}, errorf(http.StatusBadRequest, "ring %q: give a ring name (letters, digits, - and _), not all", req.Ring)
		}
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = defaultEnrollTTL
	}
	tok, hash := pki.NewToken()
	t := store.Token{Hash: hash, Role: api.RoleEnroll, Name: req.Name, Expires: time.Now().Add(ttl), MaxUses: req.Uses, Ring: req.Ring}
	if err := s.st.AddToken(ctx, t); err != nil {
		return api.TokenResponse{}, err
	}
	ring := "devices wait for approval"
	if req.Ring != "" {
		ring = "ring " + req.Ring
	}
	uses := "any number of uses"
	if req.Uses > 0 {
		uses = fmt.Sprintf("%d uses", req.Uses)
	}
	s.audit(ctx, api.AuditEvent{Actor: who.actor(), Type: "token_created", Message: fmt.Sprintf("%s (enroll; %s; %s; until %s)", req.Name, ring, uses, t.Expires.UTC().Format(time.RFC3339))})
	return api.TokenResponse{Token: tok, ID: tokenID(hash), Role: api.RoleEnroll, Name: req.Name}, nil
}

// rotateToken replaces a data-directory token (admin.token or
// enroll.token): the old value stops working at once.
func (s *Server) rotateToken(r *http.Request, who identity) (any, error) {
	var req api.RotateRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Token != "admin" && req.Token != "enroll" {
		return nil, errorf(http.StatusBadRequest, "token %q: rotate admin or enroll", req.Token)
	}
	tok, err := s.RotateToken(r.Context(), req.Token)
	if err != nil {
		return nil, err
	}
	role := api.RoleAdmin
	if req.Token == "enroll" {
		role = api.RoleEnroll
	}
	s.audit(r.Context(), api.AuditEvent{Actor: who.actor(), Type: "token_rotated", Message: fmt.Sprintf("%s.token: the old one is revoked", req.Token)})
	return api.TokenResponse{Token: tok, ID: tokenID(pki.TokenHash(tok)), Role: role, Name: req.Token}, nil
}

// tokenID is how a token is named in lists: the start of its hash.
func tokenID(hash string) string { return hash[:16] }

func (s *Server) tokenInfo(ctx context.Context, t store.Token) api.TokenInfo {
	dataDir := false
	for _, f := range []string{AdminTokenFile, EnrollTokenFile} {
		if h, err := s.st.Meta(ctx, dataDirTokenKey(f)); err == nil && h == t.Hash {
			dataDir = true
		}
	}
	return api.TokenInfo{ID: tokenID(t.Hash), Role: t.Role, Name: t.Name, Created: t.Created, DataDir: dataDir,
		Expires: t.Expires, MaxUses: t.MaxUses, Uses: t.Uses, Ring: t.Ring}
}

func (s *Server) tokens(r *http.Request, _ identity) (any, error) {
	ts, err := s.st.Tokens(r.Context())
	out := []api.TokenInfo{}
	for _, t := range ts {
		out = append(out, s.tokenInfo(r.Context(), t))
	}
	return out, err
}

// revokeToken forgets a token: requests with it are refused from now
// on, and its dashboard sessions end. The data directory's tokens and
// the caller's own are refused (the server could not start, or the
// caller would lock itself out).
func (s *Server) revokeToken(r *http.Request, who identity) (any, error) {
	id := r.PathValue("id")
	ts, err := s.st.Tokens(r.Context())
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		if tokenID(t.Hash) != id {
			continue
		}
		info := s.tokenInfo(r.Context(), t)
		switch {
		case info.DataDir:
			return nil, errorf(http.StatusConflict, "token %s (%s) is in the server's data directory; rotate it instead (hotpatch fleet token rotate %s)", id, t.Name, t.Name)
		case t.Hash == who.token:
			return nil, errorf(http.StatusConflict, "token %s is the one this request came with; revoke it with another admin token", id)
		}
		if err := s.st.DeleteToken(r.Context(), t.Hash); err != nil {
			return nil, err
		}
		s.audit(r.Context(), api.AuditEvent{Actor: who.actor(), Type: "token_revoked", Message: fmt.Sprintf("%s %s (%s)", id, t.Name, t.Role)})
		return info, nil
	}
	return nil, errorf(http.StatusNotFound, "no token %q (hotpatch fleet token list shows their ids)", id)
}
