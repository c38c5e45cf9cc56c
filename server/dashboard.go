package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
	"github.com/hotpatch/hotpatch/server/store"
)

// The dashboard is served by the server itself under /ui/, over the same
// TLS: pages rendered from html/template, a stylesheet and one small
// script, all embedded in the binary. Every page works without the
// script; with it, the parts of a page marked data-live are refreshed in
// place when the server-sent event stream (/ui/stream) says something
// changed, and the forms that act ask for confirmation in a dialog. See
// docs/dashboard.md.

// dashboardFiles are the dashboard's assets: its page templates, layout,
// stylesheet and script (server/dashboardassets/, no Go code); the code
// that serves them is this file and the other dashboard*.go files.
//
//go:embed dashboardassets
var dashboardFiles embed.FS

// dashboard is the parsed templates and the static assets.
type dashboard struct {
	pages   map[string]*template.Template
	static  map[string][]byte
	version string // of the assets, in their URLs (cached for good)
}

// Cookie and header names of the dashboard.
const (
	sessionCookie  = "__Host-hotpatch-session" // Secure, Path=/, no Domain: the browser enforces it
	fragmentHeader = "X-Hotpatch-Fragment"     // the script asks for the page's main part only
	csrfField      = "csrf"
)

func loadDashboard() (*dashboard, error) {
	d := &dashboard{pages: map[string]*template.Template{}, static: map[string][]byte{}}
	h := sha256.New()
	err := fs.WalkDir(dashboardFiles, "dashboardassets/static", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := dashboardFiles.ReadFile(p)
		d.static[path.Base(p)] = data
		h.Write(data)
		return err
	})
	if err != nil {
		return nil, err
	}
	d.version = hex.EncodeToString(h.Sum(nil))[:12]
	pages, err := fs.Glob(dashboardFiles, "dashboardassets/pages/*.html")
	if err != nil {
		return nil, err
	}
	for _, p := range pages {
		t, err := template.New("").Funcs(templateFuncs).ParseFS(dashboardFiles, "dashboardassets/layout.html", p)
		if err != nil {
			return nil, fmt.Errorf("dashboard template %s: %w", p, err)
		}
		d.pages[strings.TrimSuffix(path.Base(p), ".html")] = t
	}
	return d, nil
}

// user is who is signed in to the dashboard.
type user struct {
	identity
	session string // hash of the cookie's value
	csrf    string
}

// view is what every page template gets.
type view struct {
	Title   string
	Section string // the navigation entry to mark current
	User    user
	Asset   string // asset version
	Notice  string // one line: what just happened
	Error   string // one line: what went wrong
	Now     time.Time
	Data    any
}

// Can tells whether the signed-in token's role includes role: a page
// shows the controls that act only to those who may use them.
func (v view) Can(role string) bool { return roleRank[v.User.role] >= roleRank[role] }

// Role is the signed-in token's role.
func (v view) Role() string { return v.User.role }

// Name is the signed-in token's name.
func (v view) Name() string { return v.User.name }

// CSRF is the value forms that act send back.
func (v view) CSRF() string { return v.User.csrf }

func (s *Server) dashboardRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /ui/static/{version}/{name}", s.static)
	mux.HandleFunc("GET /ui/signin", s.signinPage)
	mux.Handle("POST /ui/signin", s.unauthenticated(http.HandlerFunc(s.signin)))
	mux.Handle("POST /ui/signout", s.page("", s.signout))
	mux.Handle("GET /ui/stream", s.page(api.RoleViewer, s.stream))
	mux.Handle("GET /ui/{$}", s.page(api.RoleViewer, s.overviewPage))
	mux.Handle("GET /ui/rollouts", s.page(api.RoleViewer, s.rolloutsPage))
	mux.Handle("GET /ui/rollouts/new", s.page(api.RoleOperator, s.newRolloutPage))
	mux.Handle("POST /ui/rollouts", s.page(api.RoleOperator, s.newRolloutForm))
	mux.Handle("GET /ui/rollouts/{id}", s.page(api.RoleViewer, s.rolloutPage))
	mux.Handle("GET /ui/rollouts/{id}/{action}", s.page(api.RoleOperator, s.steerForm))
	mux.Handle("POST /ui/rollouts/{id}/{action}", s.page(api.RoleOperator, s.steerForm))
	mux.Handle("GET /ui/patches", s.page(api.RoleViewer, s.patchesPage))
	mux.Handle("GET /ui/hosts", s.page(api.RoleViewer, s.hostsPage))
	mux.Handle("GET /ui/hosts/{id}", s.page(api.RoleViewer, s.hostPage))
	mux.Handle("GET /ui/hosts/{id}/revoke", s.page(api.RoleAdmin, s.revokeForm))
	mux.Handle("POST /ui/hosts/{id}/revoke", s.page(api.RoleAdmin, s.revokeForm))
	mux.Handle("POST /ui/hosts/{id}/approve", s.page(api.RoleOperator, s.approveForm))
	mux.Handle("GET /ui/events", s.page(api.RoleViewer, s.eventsPage))
}

// securityHeaders keeps the pages to their own origin: no inline script
// or style (the templates have none), no framing.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
}

func (s *Server) static(w http.ResponseWriter, r *http.Request) {
	data, ok := s.ui.static[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	securityHeaders(w)
	switch path.Ext(r.PathValue("name")) {
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case ".svg":
		w.Header().Set("Content-Type", "image/svg+xml")
	}
	if r.PathValue("version") == s.ui.version {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Write(data)
}

// pageFunc serves a dashboard page for a signed-in user.
type pageFunc func(w http.ResponseWriter, r *http.Request, u user) error

// page wraps a dashboard handler: the session, the role the page needs,
// and for a POST the CSRF value and the origin. Errors become an error
// page (or, for the script, a fragment with the error).
func (s *Server) page(need string, h pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		w.Header().Set("Cache-Control", "no-store")
		u, err := s.sessionUser(r)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.renderError(w, r, user{}, fmt.Errorf("reading the session: %w", err)) // the database, not the user
			return
		}
		if err != nil {
			if r.Header.Get(fragmentHeader) != "" || r.URL.Path == "/ui/stream" {
				http.Error(w, "signed out", http.StatusUnauthorized)
				return
			}
			next := r.URL.RequestURI()
			if r.Method != http.MethodGet {
				next = "/ui/"
			}
			http.Redirect(w, r, "/ui/signin?next="+url.QueryEscape(next), http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			if err := checkPost(r, u); err != nil {
				s.renderError(w, r, u, err)
				return
			}
		}
		if need != "" && roleRank[u.role] < roleRank[need] {
			s.renderError(w, r, u, errorf(http.StatusForbidden, "your token %s has the role %s; this needs %s", u.name, u.role, need))
			return
		}
		if err := h(w, r, u); err != nil {
			s.renderError(w, r, u, err)
		}
	})
}

// checkPost refuses a form that did not come from a page of this
// dashboard: the CSRF value of the session, and the browser's Origin
// when it sends one.
func checkPost(r *http.Request, u user) error {
	if o := r.Header.Get("Origin"); o != "" && o != "https://"+r.Host {
		return errorf(http.StatusForbidden, "the form came from %s, not from this dashboard", o)
	}
	got := r.PostFormValue(csrfField)
	if subtle.ConstantTimeCompare([]byte(got), []byte(u.csrf)) != 1 {
		return errorf(http.StatusForbidden, "the form is out of date (sign-in changed); reload the page and try again")
	}
	return nil
}

// sessionUser is the signed-in user of a request, from the session
// cookie and the token it was made with.
func (s *Server) sessionUser(r *http.Request) (user, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return user{}, store.ErrNotFound
	}
	h := pki.TokenHash(c.Value)
	se, err := s.st.Session(r.Context(), h)
	if err != nil {
		return user{}, err
	}
	t, err := s.st.TokenByHash(r.Context(), se.TokenHash)
	if err != nil {
		return user{}, err
	}
	if roleRank[t.Role] == 0 {
		return user{}, store.ErrNotFound
	}
	return user{identity: identity{role: t.Role, name: t.Name, token: t.Hash}, session: h, csrf: se.CSRF}, nil
}

// render writes a page, or only its main part when the script asks.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	t, ok := s.ui.pages[name]
	if !ok {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	v.Asset, v.Now = s.ui.version, time.Now().UTC()
	tmpl := "layout"
	if r.Header.Get(fragmentHeader) != "" {
		tmpl = "main"
		w.Header().Set("X-Hotpatch-Title", url.PathEscape(v.Title+" · hotpatch"))
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, tmpl, v); err != nil {
		log.Printf("hotpatch-server: dashboard page %s: %v", name, err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

func (s *Server) renderError(w http.ResponseWriter, r *http.Request, u user, err error) {
	status := http.StatusInternalServerError
	var he *httpError
	switch {
	case errors.As(err, &he):
		status = he.status
	case errors.Is(err, store.ErrNotFound):
		status = http.StatusNotFound
	}
	s.render(w, r, status, "error", view{Title: http.StatusText(status), User: u, Error: strings.ReplaceAll(err.Error(), "\n", " ")})
}

// Sign-in and sign-out.

type signinData struct {
	Next string
}

func (s *Server) signinPage(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	w.Header().Set("Cache-Control", "no-store")
	if u, err := s.sessionUser(r); err == nil && u.role != "" {
		http.Redirect(w, r, localPath(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "signin", view{Title: "Sign in", Data: signinData{Next: localPath(r.URL.Query().Get("next"))}})
}

// localPath keeps a redirect target on this dashboard.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/ui/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n") {
		return "/ui/"
	}
	return p
}

func (s *Server) signin(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	w.Header().Set("Cache-Control", "no-store")
	next := localPath(r.PostFormValue("next"))
	fail := func(status int, msg string) {
		s.render(w, r, status, "signin", view{Title: "Sign in", Error: msg, Data: signinData{Next: next}})
	}
	if o := r.Header.Get("Origin"); o != "" && o != "https://"+r.Host {
		fail(http.StatusForbidden, "the sign-in form came from another site")
		return
	}
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if tok == "" {
		fail(http.StatusBadRequest, "Enter an admin token (admin.token in the server's data directory, or one made with hotpatch fleet token create).")
		return
	}
	hash := pki.TokenHash(tok)
	t, err := s.st.TokenByHash(r.Context(), hash)
	if (err != nil || roleRank[t.Role] == 0) && s.authFails.blocked(source(r), time.Now()) {
		fail(http.StatusTooManyRequests, "Too many failed sign-ins from this address; wait a minute.")
		return
	}
	switch {
	case err != nil && !errors.Is(err, store.ErrNotFound):
		fail(http.StatusInternalServerError, "The token could not be checked: "+err.Error())
		return
	case err == nil && t.Role == api.RoleEnroll:
		s.authFailed(r, "dashboard sign-in with an enrollment token")
		fail(http.StatusUnauthorized, "That is the enrollment token, for agents; sign in with an admin token.")
		return
	case err != nil || roleRank[t.Role] == 0:
		s.authFailed(r, "dashboard sign-in with an unknown token")
		fail(http.StatusUnauthorized, "This server knows no such token.")
		return
	}
	value := make([]byte, 32)
	csrf := make([]byte, 16)
	rand.Read(value)
	rand.Read(csrf)
	v := hex.EncodeToString(value)
	now := time.Now()
	se := store.Session{Hash: pki.TokenHash(v), TokenHash: hash, CSRF: hex.EncodeToString(csrf), Created: now, Expires: now.Add(s.cfg.SessionTTL)}
	if err := s.st.AddSession(r.Context(), se); err != nil {
		fail(http.StatusInternalServerError, "The session could not be stored: "+err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: v, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Expires: se.Expires})
	s.audit(r.Context(), api.AuditEvent{Actor: "token:" + t.Name, Type: "signed_in", Message: "dashboard, role " + t.Role})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) signout(w http.ResponseWriter, r *http.Request, u user) error {
	if err := s.st.DeleteSession(r.Context(), u.session); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	s.audit(r.Context(), api.AuditEvent{Actor: u.actor(), Type: "signed_out", Message: "dashboard"})
	s.dashboardChanged() // ends this session's streams
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
	return nil
}

// Live updates.

// dashboardChanged wakes the dashboard's event streams: something they show may
// have changed.
func (s *Server) dashboardChanged() {
	s.uiMu.Lock()
	defer s.uiMu.Unlock()
	close(s.uiCh)
	s.uiCh = make(chan struct{})
}

func (s *Server) uiChanged() <-chan struct{} {
	s.uiMu.Lock()
	defer s.uiMu.Unlock()
	return s.uiCh
}

// Pacing of the event stream.
const (
	streamCoalesce  = 150 * time.Millisecond // changes closer than this are sent as one
	streamMinGap    = time.Second            // and a page refreshes at most this often while they keep coming
	streamHeartbeat = 15 * time.Second       // a comment line keeps proxies from closing an idle stream
)

// stream is the server-sent event stream of a dashboard page: "change"
// whenever something the pages show may have changed (the page fetches
// its live parts again), "signout" when the session ended. Another
// replica's changes arrive within a tick (watchChanges).
func (s *Server) stream(w http.ResponseWriter, r *http.Request, u user) error {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s.metrics.streams.Add(1)
	defer s.metrics.streams.Add(-1)
	send := func(format string, args ...any) bool {
		fmt.Fprintf(w, format, args...)
		return rc.Flush() == nil
	}
	// The wake-up channel is taken before the version is read and before
	// hello is sent, and again before each look: a change made in between
	// closes the channel held, so none is missed (a client acts on hello
	// at once).
	ctx := r.Context()
	ch := s.uiChanged()
	shown, _ := s.st.Version(ctx) // what the page was rendered from, about
	if !send("retry: 2000\nevent: hello\ndata: {\"role\":%q}\n\n", u.role) {
		return nil
	}
	beat := time.NewTicker(streamHeartbeat)
	defer beat.Stop()
	var sent time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stop:
			return nil
		case <-beat.C:
			if !send(": ping\n\n") {
				return nil
			}
			continue
		case <-ch:
		}
		// Let a burst of changes settle into one event, and keep a busy
		// fleet (a rollout to thousands) to one refresh a second per page.
		select {
		case <-time.After(max(streamCoalesce, time.Until(sent.Add(streamMinGap)))):
		case <-ctx.Done():
			return nil
		}
		ch = s.uiChanged()
		if _, err := s.st.Session(ctx, u.session); errors.Is(err, store.ErrNotFound) {
			send("event: signout\ndata: {}\n\n")
			return nil
		}
		// A wake-up for what this stream already told (another replica's
		// poll seeing this one's change) sends nothing.
		if v, err := s.st.Version(ctx); err == nil {
			if v == shown {
				continue
			}
			shown = v
		}
		sent = time.Now()
		if !send("event: change\ndata: {\"at\":%q}\n\n", time.Now().UTC().Format(time.RFC3339Nano)) {
			return nil
		}
	}
}

// sampleExposure stores the fleet's exposure per CVE for the chart: at
// most every ExposureEvery, only when something changed, and only the
// counts that moved since the last sample. The rollout engine calls it.
func (s *Server) sampleExposure(ctx context.Context) {
	e := &s.exposure
	if time.Since(e.last) < s.cfg.ExposureEvery {
		return
	}
	v, err := s.st.Version(ctx)
	if err != nil || v == e.version {
		return
	}
	e.last, e.version = time.Now(), v
	patches, err := s.st.Patches(ctx)
	if err != nil {
		return
	}
	devices, err := s.st.Devices(ctx)
	if err != nil {
		return
	}
	rep := cveReport(patches, devices, "")
	cur := map[string][3]int{}
	var moved []api.CVEReport
	for _, c := range rep.CVEs {
		cur[c.CVE] = [3]int{c.Vulnerable, c.Protected, c.FixedOnDisk}
		if prev, ok := e.counts[c.CVE]; !ok || prev != cur[c.CVE] {
			moved = append(moved, c)
		}
	}
	if len(moved) == 0 {
		return
	}
	if err := s.st.AddExposure(ctx, time.Now(), moved); err != nil {
		return
	}
	e.counts = cur
	s.st.PruneExposure(ctx, time.Now().Add(-exposureKept))
	s.dashboardChanged()
}

// exposureKept is how long exposure samples are kept: the chart shows
// the last chartSpan; a week lets an operator look back with SQL.
const exposureKept = 7 * 24 * time.Hour

// fleetSnapshot is the devices (with their inventories) and the catalog
// as of one store version: what the overview, hosts and rollout pages
// read. Every open page refreshes on the same change, so they share one
// read of the fleet instead of one each (at 10,000 devices a read is
// hundreds of milliseconds). Its key has a 10-second clock in it too, so
// "last seen" moves on a quiet fleet. Read-only for its users.
type fleetSnapshot struct {
	key     string
	devices []store.Device
	patches []api.PatchInfo
}

// fleet returns the current snapshot, reading it once per key; callers
// asking meanwhile wait for that read.
func (s *Server) fleet(ctx context.Context) (*fleetSnapshot, error) {
	v, err := s.st.Version(ctx)
	if err != nil {
		return nil, err
	}
	key := v + "/" + strconv.FormatInt(time.Now().Unix()/10, 10)
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if s.snap != nil && s.snap.key == key {
		return s.snap, nil
	}
	devices, err := s.st.Devices(ctx)
	if err != nil {
		return nil, err
	}
	patches, err := s.st.Patches(ctx)
	if err != nil {
		return nil, err
	}
	s.snap = &fleetSnapshot{key: key, devices: devices, patches: patches}
	return s.snap, nil
}

// exposureSampler is sampleExposure's memory (the rollout engine's
// goroutine only).
type exposureSampler struct {
	last    time.Time
	version string
	counts  map[string][3]int
}
