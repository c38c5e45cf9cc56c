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
	{"POST", api.PathRollout + "{id}/{action}", api.RoleOperator, "halt, resume or rollback a rollout", nil, api.Rollout{}, func(s *Server) handler { return s.rolloutAction }},
	{"GET", api.PathDevices, api.RoleViewer, "List the devices", nil, []api.Device{}, func(s *Server) handler { return s.devices }},
	{"POST", api.PathDevice + "{id}/revoke", api.RoleAdmin, "Revoke a device", nil, api.Device{}, func(s *Server) handler { return s.revoke }},
	{"GET", api.PathReport, api.RoleViewer, "Per-CVE report (?cve=ID)", nil, api.Report{}, func(s *Server) handler { return s.report }},
	{"GET", api.PathEvents, api.RoleViewer, "The audit log, oldest first (?after=SEQ&limit=N; filters: type, device, rollout, patch, actor, q)", nil, []api.AuditEvent{}, func(s *Server) handler { return s.events }},
	{"POST", api.PathTokens, api.RoleAdmin, "Make an admin token with a role", api.TokenRequest{}, api.TokenResponse{}, func(s *Server) handler { return s.newToken }},
	{"GET", api.PathTokens, api.RoleAdmin, "List the tokens (never their values)", nil, []api.TokenInfo{}, func(s *Server) handler { return s.tokens }},
	{"DELETE", api.PathToken + "{id}", api.RoleAdmin, "Revoke a token (its dashboard sessions end)", nil, api.TokenInfo{}, func(s *Server) handler { return s.revokeToken }},
	{"GET", api.PathMetrics, api.RoleViewer, "Prometheus metrics", nil, "", func(s *Server) handler { return s.metricsText }},
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathHealth, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	for _, rt := range routeTable {
		mux.Handle(rt.method+" "+rt.path, s.api(rt.auth, rt.h(s)))
	}
	s.dashboardRoutes(mux)
	return mux
}

// api wraps a handler with authentication: need is "" (the handler checks
// the enrollment token itself), "device" (a valid, unrevoked client
// certificate), or the least admin role.
func (s *Server) api(need string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := s.authenticate(r, need)
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
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(api.Error{Error: strings.ReplaceAll(err.Error(), "\n", " ")})
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
	if err != nil || roleRank[t.Role] == 0 {
		return identity{}, errorf(http.StatusUnauthorized, "unknown token")
	}
	if roleRank[t.Role] < roleRank[need] {
		return identity{}, errorf(http.StatusForbidden, "token %s has role %s; this needs %s", t.Name, t.Role, need)
	}
	return identity{role: t.Role, name: t.Name, token: t.Hash}, nil
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "bad request body: %v", err)
	}
	return nil
}

func (s *Server) audit(ctx context.Context, e api.AuditEvent) {
	s.st.AddEvent(ctx, e)
	s.touch()
}

func (s *Server) enroll(r *http.Request, _ identity) (any, error) {
	var req api.EnrollRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	t, err := s.st.TokenByHash(r.Context(), pki.TokenHash(req.Token))
	if err != nil || t.Role != roleEnroll {
		return nil, errorf(http.StatusUnauthorized, "bad enrollment token")
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
	d.ID, d.Name, d.Hostname, d.Kernel, d.Labels, d.Enrolled = id, name, req.Hostname, req.Kernel, req.Labels, time.Now()
	if err := s.st.AddDevice(r.Context(), d); err != nil {
		return nil, err
	}
	var labels []string
	for k, v := range req.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	s.audit(r.Context(), api.AuditEvent{Actor: "device:" + id, Type: "enrolled", Device: id, Message: fmt.Sprintf("%s (%s) %s", name, req.Hostname, strings.Join(labels, " "))})
	return api.EnrollResponse{DeviceID: id, Cert: string(cert), CA: string(s.ca.CertPEM())}, nil
}

// sync is the long-poll: it answers at once when the desired state
// changed since the device's cursor, or when it changes within wait.
func (s *Server) sync(r *http.Request, who identity) (any, error) {
	cursor, _ := strconv.ParseInt(r.URL.Query().Get("cursor"), 10, 64)
	wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil || wait <= 0 || wait > 5*time.Minute {
		wait = 30 * time.Second
	}
	s.st.Seen(r.Context(), who.device.ID, time.Now())
	s.metrics.longPolls.Add(1)
	defer s.metrics.longPolls.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	if n, err := s.st.Change(r.Context()); err == nil {
		s.wake(n) // a change made on another replica a moment ago
	}
	for {
		s.mu.Lock()
		seq, ch := s.seq, s.changed
		s.mu.Unlock()
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
	s.touch()
	s.kick()
	return nil, nil
}

func (s *Server) deviceEvents(r *http.Request, who identity) (any, error) {
	var evs api.DeviceEvents
	if err := decode(r, &evs); err != nil {
		return nil, err
	}
	for _, e := range evs.Events {
		msg := e.Message
		for _, part := range []string{e.Signal, e.Function, e.Error} {
			if part != "" {
				msg = strings.TrimPrefix(msg+"; "+part, "; ")
			}
		}
		if e.PID != 0 {
			msg = strings.TrimSuffix(fmt.Sprintf("pid %d: %s", e.PID, msg), ": ")
		}
		s.audit(r.Context(), api.AuditEvent{Time: e.Time, Actor: who.actor(), Type: e.Type, Device: who.device.ID, Patch: e.Patch, Message: msg})
	}
	s.kick()
	return nil, nil
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
		if err := patch.Verify(p, s.publishers); err != nil {
			return nil, errorf(http.StatusForbidden, "%v", err)
		}
	}
	info := api.PatchInfo{
		SHA256: patch.FileDigest(data), ID: p.ID, Version: p.Version, CVEs: p.CVEs, Severity: string(p.Severity),
		Description: p.Description, TargetName: p.Target.Name, TargetBuildID: hex.EncodeToString(p.Target.BuildID),
		Signer: patch.KeyID(p.Signer), Size: len(data), Published: time.Now().UTC(),
	}
	for _, f := range p.Functions {
		info.Functions = append(info.Functions, f.Name)
	}
	if old, err := s.st.Patch(r.Context(), info.SHA256); err == nil {
		return old, nil // the same file again
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
	s.kick()
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
	tok, err := s.NewToken(req.Role, req.Name)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	s.audit(r.Context(), api.AuditEvent{Actor: who.actor(), Type: "token_created", Message: fmt.Sprintf("%s (%s)", req.Name, req.Role)})
	return api.TokenResponse{Token: tok, ID: tokenID(pki.TokenHash(tok)), Role: req.Role, Name: req.Name}, nil
}

// tokenID is how a token is named in lists: the start of its hash.
func tokenID(hash string) string { return hash[:16] }

func (s *Server) tokenInfo(t store.Token) api.TokenInfo {
	dataDir := t.Hash == pki.TokenHash(s.adminToken) || t.Hash == pki.TokenHash(s.enrollTok)
	return api.TokenInfo{ID: tokenID(t.Hash), Role: t.Role, Name: t.Name, Created: t.Created, DataDir: dataDir}
}

func (s *Server) tokens(r *http.Request, _ identity) (any, error) {
	ts, err := s.st.Tokens(r.Context())
	out := []api.TokenInfo{}
	for _, t := range ts {
		out = append(out, s.tokenInfo(t))
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
		info := s.tokenInfo(t)
		switch {
		case info.DataDir:
			return nil, errorf(http.StatusConflict, "token %s (%s) is in the server's data directory; replace the file instead (remove it and restart: a new one is made)", id, t.Name)
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
