package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
	"github.com/hotpatch/hotpatch/server/store"
)

// web is a browser without a script engine: cookies, no redirects
// followed, forms posted by hand. The tests in this file check what the
// dashboard does without JavaScript; dashboard_browser_test.go runs it in
// Chromium.
type web struct {
	t    testing.TB
	s    *Server
	http *http.Client
}

func newWeb(t testing.TB, s *Server) *web {
	t.Helper()
	cfg, err := pki.ClientTLS(s.CA(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	return &web{t: t, s: s, http: &http.Client{
		Transport:     &http.Transport{TLSClientConfig: cfg},
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// get returns the status, the Location (for a redirect) and the body.
func (w *web) get(path string) (int, string, string) {
	w.t.Helper()
	return w.send("GET", path, nil, nil)
}

func (w *web) post(path string, form url.Values, header http.Header) (int, string, string) {
	w.t.Helper()
	return w.send("POST", path, form, header)
}

func (w *web) send(method, path string, form url.Values, header http.Header) (int, string, string) {
	w.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, w.s.URL()+path, body)
	if err != nil {
		w.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := w.http.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(data)
}

func (w *web) signIn(token string) {
	w.t.Helper()
	if st, loc, body := w.post("/ui/signin", url.Values{"token": {token}}, nil); st != http.StatusSeeOther || loc != "/ui/" {
		w.t.Fatalf("sign in: HTTP %d to %q: %s", st, loc, body)
	}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf reads the CSRF value from a page's forms.
func (w *web) csrf() string {
	w.t.Helper()
	_, _, body := w.get("/ui/")
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		w.t.Fatalf("no CSRF value on the overview: %.300s", body)
	}
	return m[1]
}

// TestDashboardSignIn: pages need a session; a wrong token, the
// enrollment token and an empty form are refused with a one-line reason;
// the session cookie is __Host-, Secure, HttpOnly, SameSite=Strict;
// sign-out ends the session on the server (the old cookie no longer
// works); a redirect after sign-in stays on the dashboard.
func TestDashboardSignIn(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	w := newWeb(t, s)

	if st, loc, _ := w.get("/ui/hosts"); st != http.StatusSeeOther || loc != "/ui/signin?next=%2Fui%2Fhosts" {
		t.Errorf("a page before sign-in: HTTP %d to %q", st, loc)
	}
	if st, loc, _ := w.get("/"); st != http.StatusSeeOther || loc != "/ui/" {
		t.Errorf("/: HTTP %d to %q", st, loc)
	}
	for _, c := range []struct {
		token, want string
		status      int
	}{
		{"", "Enter an admin token", http.StatusBadRequest},
		{"not-a-token", "This server knows no such token.", http.StatusUnauthorized},
		{s.EnrollToken(), "That is the enrollment token", http.StatusUnauthorized},
	} {
		st, _, body := w.post("/ui/signin", url.Values{"token": {c.token}}, nil)
		if st != c.status || !strings.Contains(body, c.want) || !strings.Contains(body, `role="alert"`) {
			t.Errorf("sign in with %q: HTTP %d, want %d and %q in the page", c.token, st, c.status, c.want)
		}
	}

	req, _ := http.NewRequest("POST", s.URL()+"/ui/signin", strings.NewReader(url.Values{"token": {s.AdminToken()}, "next": {"//evil.example/x"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := w.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "/ui/" {
		t.Errorf("sign-in with next=//evil.example/x redirects to %q, want /ui/", loc)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.Secure || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.Domain != "" {
		t.Fatalf("session cookie %+v", cookie)
	}
	st, _, body := w.get("/ui/")
	if st != 200 || !strings.Contains(body, "<h1>Fleet overview</h1>") {
		t.Fatalf("overview after sign-in: HTTP %d", st)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("the sign-in answer has no %s header", h)
		}
	}
	csrf := w.csrf()
	if st, loc, _ := w.post("/ui/signout", url.Values{"csrf": {csrf}}, nil); st != http.StatusSeeOther || loc != "/ui/signin" {
		t.Errorf("sign out: HTTP %d to %q", st, loc)
	}
	// The old cookie, sent again by hand, no longer opens a page.
	again := newWeb(t, s)
	u, _ := url.Parse(s.URL())
	again.http.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: cookie.Value}})
	if st, _, _ := again.get("/ui/"); st != http.StatusSeeOther {
		t.Errorf("a signed-out session's cookie: HTTP %d, want a redirect to sign in", st)
	}
	// An audit trail of both.
	evs, _ := s.st.FindEvents(context.Background(), store.EventFilter{Actor: "token:admin"})
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if got := strings.Join(types, " "); got != "signed_out signed_in" {
		t.Errorf("audit of token:admin: %q", got)
	}
}

// TestDashboardForms: what acts is a POST with the session's CSRF value,
// from this origin, by a role that may; without confirm=yes it asks
// first (the no-script path); a viewer sees no control that acts and is
// refused if it posts anyway.
func TestDashboardForms(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	defer s.Close()
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	data, _ := testPatch(t)
	var info api.PatchInfo
	if st := admin.do("POST", api.PathPatches, data, &info); st != 200 {
		t.Fatalf("publish: HTTP %d", st)
	}
	w := newWeb(t, s)
	w.signIn(s.AdminToken())
	csrf := w.csrf()

	// With no ring labels in the fleet, the form offers ring all.
	if _, _, body := w.get("/ui/rollouts/new?patch=" + info.SHA256); !strings.Contains(body, `name="rings" value="all"`) || !strings.Contains(body, `value="`+info.SHA256+`" selected`) {
		t.Errorf("the new-rollout form without ring labels: %.600s", body)
	}

	// Start a rollout with the form; a bad soak is refused with the form kept.
	form := url.Values{"csrf": {csrf}, "patch": {info.SHA256}, "rings": {"canary, broad"}, "soak": {"ten minutes"}, "max_failures": {"0"}}
	st, _, body := w.post("/ui/rollouts", form, nil)
	if st != http.StatusBadRequest || !strings.Contains(body, "Soak &#34;ten minutes&#34; is not a duration") || !strings.Contains(body, `value="canary, broad"`) {
		t.Errorf("a bad soak: HTTP %d: %.400s", st, body)
	}
	form.Set("soak", "1h")
	st, loc, _ := w.post("/ui/rollouts", form, nil)
	id := strings.TrimSuffix(strings.TrimPrefix(loc, "/ui/rollouts/"), "?did=start")
	if st != http.StatusSeeOther || !strings.HasPrefix(id, "ro-") {
		t.Fatalf("start a rollout: HTTP %d to %q", st, loc)
	}
	var ro api.Rollout
	admin.do("GET", api.PathRollout+id, nil, &ro)
	if ro.State != api.StateRunning || len(ro.Rings) != 2 || ro.Rings[1].Name != "broad" || ro.Soak != time.Hour {
		t.Errorf("the rollout the form started: %+v", ro)
	}

	halt := "/ui/rollouts/" + id + "/halt"
	if st, _, _ := w.post(halt, url.Values{"confirm": {"yes"}}, nil); st != http.StatusForbidden {
		t.Errorf("halt without the CSRF value: HTTP %d", st)
	}
	if st, _, _ := w.post(halt, url.Values{"csrf": {csrf}, "confirm": {"yes"}}, http.Header{"Origin": {"https://evil.example"}}); st != http.StatusForbidden {
		t.Errorf("halt from another origin: HTTP %d", st)
	}
	st, _, body = w.post(halt, url.Values{"csrf": {csrf}}, nil)
	if st != 200 || !strings.Contains(body, "Halt rollout "+id+"?") || !strings.Contains(body, `name="confirm" value="yes"`) {
		t.Errorf("halt without confirm: HTTP %d, want the question: %.300s", st, body)
	}
	admin.do("GET", api.PathRollout+id, nil, &ro)
	if ro.State != api.StateRunning {
		t.Fatalf("the rollout is %s before the confirmation", ro.State)
	}
	if st, loc, _ := w.post(halt, url.Values{"csrf": {csrf}, "confirm": {"yes"}}, http.Header{"Origin": {s.URL()}}); st != http.StatusSeeOther || loc != "/ui/rollouts/"+id+"?did=halt" {
		t.Errorf("halt confirmed: HTTP %d to %q", st, loc)
	}
	admin.do("GET", api.PathRollout+id, nil, &ro)
	if ro.State != api.StateHalted || ro.Reason != "halted by token:admin" {
		t.Errorf("after halt: %s (%s)", ro.State, ro.Reason)
	}
	st, _, body = w.post(halt, url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil)
	if st != http.StatusConflict || !strings.Contains(body, "is halted, not running.</p>") || !strings.Contains(body, `id="rollout-rings"`) {
		t.Errorf("halting twice: HTTP %d: %.300s", st, body)
	}
	_, _, body = w.get("/ui/rollouts/" + id + "?did=halt")
	for _, want := range []string{`id="resume"`, `id="rollback"`, "Rollout halted."} {
		if !strings.Contains(body, want) {
			t.Errorf("the halted rollout's page lacks %s", want)
		}
	}

	// A viewer: no controls that act, and refused when posting anyway.
	tok, err := s.NewToken(api.RoleViewer, "auditor")
	if err != nil {
		t.Fatal(err)
	}
	v := newWeb(t, s)
	v.signIn(tok)
	vcsrf := v.csrf()
	for _, page := range []string{"/ui/", "/ui/rollouts", "/ui/rollouts/" + id, "/ui/patches", "/ui/hosts", "/ui/events"} {
		st, _, body := v.get(page)
		if st != 200 {
			t.Errorf("viewer %s: HTTP %d", page, st)
		}
		for _, bad := range []string{"data-confirm", "/ui/rollouts/new", `id="halt"`, `id="resume"`, `id="rollback"`} {
			if strings.Contains(body, bad) {
				t.Errorf("viewer's %s shows %s", page, bad)
			}
		}
	}
	if st, _, body := v.get("/ui/rollouts/new"); st != http.StatusForbidden || !strings.Contains(body, "has the role viewer; this needs operator") {
		t.Errorf("viewer opens the new-rollout form: HTTP %d", st)
	}
	if st, _, _ := v.post("/ui/rollouts/"+id+"/resume", url.Values{"csrf": {vcsrf}, "confirm": {"yes"}}, nil); st != http.StatusForbidden {
		t.Errorf("viewer resumes: HTTP %d", st)
	}
	admin.do("GET", api.PathRollout+id, nil, &ro)
	if ro.State != api.StateHalted {
		t.Errorf("after the viewer's try the rollout is %s", ro.State)
	}
	// An operator may steer but not revoke hosts.
	optok, _ := s.NewToken(api.RoleOperator, "ops")
	o := newWeb(t, s)
	o.signIn(optok)
	_, dev := enroll(t, s, "web-1", nil)
	if st, _, _ := o.post("/ui/hosts/"+dev+"/revoke", url.Values{"csrf": {o.csrf()}, "confirm": {"yes"}}, nil); st != http.StatusForbidden {
		t.Errorf("operator revokes a host: HTTP %d", st)
	}
	if st, loc, _ := w.post("/ui/hosts/"+dev+"/revoke", url.Values{"csrf": {csrf}, "confirm": {"yes"}}, nil); st != http.StatusSeeOther || !strings.HasSuffix(loc, "?did=revoke") {
		t.Errorf("admin revokes a host: HTTP %d to %q", st, loc)
	}
}

// TestDashboardEscaping: what devices send is shown as text, never as
// markup, and the pages carry a script-only-from-here CSP.
func TestDashboardEscaping(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	evil := `<script>alert(1)</script>`
	dev, id := enrollWith(t, s, s.EnrollToken(), evil, map[string]string{"ring": `"><img src=x onerror=alert(1)>`})
	inv := inventory("00", false)
	inv.Processes[0].Exe = evil
	if st := dev.do("POST", api.PathDeviceReport, inv, nil); st != 204 {
		t.Fatalf("inventory: HTTP %d", st)
	}
	w := newWeb(t, s)
	w.signIn(s.AdminToken())
	for _, page := range []string{"/ui/hosts", "/ui/hosts/" + id, "/ui/events"} {
		_, _, body := w.get(page)
		if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
			t.Errorf("%s has the device's markup unescaped", page)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s does not show the device's name as text", page)
		}
	}
	req, _ := http.NewRequest("GET", s.URL()+"/ui/hosts", nil)
	resp, err := w.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
}

// TestDashboardStream: the event stream says hello, sends "change" when
// something shown changed (a device's inventory), coalesces, and says
// "signout" when the session ends.
func TestDashboardStream(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir())
	defer s.Close()
	w := newWeb(t, s)
	w.signIn(s.AdminToken())
	csrf := w.csrf()
	w.http.Timeout = 0
	req, _ := http.NewRequest("GET", s.URL()+"/ui/stream", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := w.http.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("stream content type %q", ct)
	}
	events := make(chan string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				events <- name
			}
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case e, ok := <-events:
			if !ok {
				return "(closed)"
			}
			return e
		case <-ctx.Done():
			t.Fatalf("no event while waiting for %s", what)
		}
		return ""
	}
	if e := next("hello"); e != "hello" {
		t.Fatalf("first event %q, want hello", e)
	}
	var count atomic.Int64
	for range 3 {
		dev, _ := enroll(t, s, fmt.Sprintf("d%d", count.Add(1)), nil)
		dev.do("POST", api.PathDeviceReport, inventory("00", false), nil)
	}
	if e := next("change"); e != "change" {
		t.Fatalf("after enrollments: %q, want change", e)
	}
	if n := s.metrics.streams.Load(); n != 1 {
		t.Errorf("streams open: %d, want 1", n)
	}
	w.post("/ui/signout", url.Values{"csrf": {csrf}}, nil)
	for {
		e := next("signout")
		if e == "signout" {
			break
		}
		if e != "change" {
			t.Fatalf("after sign-out: %q, want signout", e)
		}
	}
	if e := next("the end"); e != "(closed)" {
		t.Errorf("after signout the stream sent %q", e)
	}
}

// TestDashboardExposure: the chart's samples follow a rollout: the CVE's
// vulnerable count goes 2 → 1 → 0 as the devices report the patch, and
// the overview draws one line for it.
func TestDashboardExposure(t *testing.T) {
	s, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", AnyPublisher: true, Tick: 20 * time.Millisecond, ExposureEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	data, p := testPatch(t)
	admin.do("POST", api.PathPatches, data, nil)
	bid := fmt.Sprintf("%x", p.Target.BuildID)
	var devs []*caller
	for _, n := range []string{"a", "b"} {
		d, _ := enroll(t, s, n, nil)
		d.do("POST", api.PathDeviceReport, inventory(bid, false), nil)
		devs = append(devs, d)
	}
	var seen []int
	waitCount := func(want int) {
		t.Helper()
		testutil.Eventually(t, time.Minute, func() bool {
			ss, _ := s.st.Exposure(context.Background(), time.Time{})
			return len(ss) > 0 && ss[len(ss)-1].Vulnerable == want
		}, func() string {
			return fmt.Sprintf("the exposure samples never reached %d vulnerable (seen %v)", want, seen)
		})
		if len(seen) == 0 || seen[len(seen)-1] != want {
			seen = append(seen, want)
		}
	}
	waitCount(2)
	devs[0].do("POST", api.PathDeviceReport, inventory(bid, true), nil)
	waitCount(1)
	devs[1].do("POST", api.PathDeviceReport, inventory(bid, true), nil)
	waitCount(0)
	ss, _ := s.st.Exposure(context.Background(), time.Time{})
	var counts []int
	for _, x := range ss {
		counts = append(counts, x.Vulnerable)
	}
	// Before both devices reported, the counts may have been sampled at
	// 0 or 1; then one sample per change, never the same count twice in
	// a row.
	got := fmt.Sprint(counts)
	if !strings.HasSuffix(got, " 2 1 0]") && got != "[2 1 0]" {
		t.Errorf("samples %s, want them to end 2 1 0", got)
	}
	for i := 1; i < len(counts); i++ {
		if counts[i] == counts[i-1] {
			t.Errorf("samples %s: the same count twice in a row", got)
		}
	}
	w := newWeb(t, s)
	w.signIn(s.AdminToken())
	_, _, body := w.get("/ui/")
	if n := strings.Count(body, `<polyline class="line series-0"`); n != 1 || !strings.Contains(body, "CVE-2026-0001: <strong>0</strong> vulnerable now") {
		t.Errorf("overview chart: %d lines: %.2000s", n, body)
	}
}

// TestDashboardTokenRevoked: revoking a token ends the dashboard
// sessions signed in with it at once: the open stream says signout, and
// the next page asks to sign in.
func TestDashboardTokenRevoked(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	tok, err := s.NewToken(api.RoleViewer, "wall-screen")
	if err != nil {
		t.Fatal(err)
	}
	w := newWeb(t, s)
	w.signIn(tok)
	w.http.Timeout = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+"/ui/stream", nil)
	resp, err := w.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	next := func() string {
		for sc.Scan() {
			if name, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				return name
			}
		}
		return "(closed)"
	}
	if e := next(); e != "hello" {
		t.Fatalf("first event %q", e)
	}
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	var list []api.TokenInfo
	admin.do("GET", api.PathTokens, nil, &list)
	id := ""
	for _, ti := range list {
		if ti.Name == "wall-screen" {
			id = ti.ID
		}
	}
	if st := admin.do("DELETE", api.PathToken+id, nil, nil); st != 200 {
		t.Fatalf("revoke: HTTP %d", st)
	}
	if e := next(); e != "signout" {
		t.Errorf("after the token was revoked the stream sent %q, want signout", e)
	}
	if st, loc, _ := w.get("/ui/"); st != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/signin") {
		t.Errorf("a page after the token was revoked: HTTP %d to %q", st, loc)
	}
	if st, _, body := w.post("/ui/signin", url.Values{"token": {tok}}, nil); st != http.StatusUnauthorized || !strings.Contains(body, "no such token") {
		t.Errorf("signing in with the revoked token: HTTP %d", st)
	}
}

// TestDashboardApprove: a host that is not approved says so and offers
// an operator the form that approves it into the ring it asks for; a
// viewer gets no form and is refused.
func TestDashboardApprove(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	_, id := enrollWith(t, s, s.EnrollToken(), "new-host", map[string]string{"ring": "canary"})
	viewerTok, err := s.NewToken(api.RoleViewer, "viewer")
	if err != nil {
		t.Fatal(err)
	}
	viewer := newWeb(t, s)
	viewer.signIn(viewerTok)
	if _, _, body := viewer.get("/ui/hosts/" + id); !strings.Contains(body, "not approved") || strings.Contains(body, `action="/ui/hosts/`+id+`/approve"`) {
		t.Errorf("the host page for a viewer: approval state or form wrong")
	}
	if st, _, _ := viewer.post("/ui/hosts/"+id+"/approve", url.Values{"csrf": {viewer.csrf()}, "ring": {"canary"}}, nil); st != http.StatusForbidden {
		t.Errorf("a viewer approving: HTTP %d, want 403", st)
	}
	w := newWeb(t, s)
	w.signIn(s.AdminToken())
	if _, _, body := w.get("/ui/hosts/" + id); !strings.Contains(body, `action="/ui/hosts/`+id+`/approve"`) || !strings.Contains(body, `value="canary"`) {
		t.Errorf("the host page offers no approval into the ring it asks for")
	}
	if st, loc, body := w.post("/ui/hosts/"+id+"/approve", url.Values{"csrf": {w.csrf()}, "ring": {"canary"}}, nil); st != http.StatusSeeOther || loc != "/ui/hosts/"+id+"?did=approve" {
		t.Fatalf("approve: HTTP %d to %q: %.300s", st, loc, body)
	}
	if d, err := s.st.Device(context.Background(), id); err != nil || d.Ring != "canary" || d.Approved.IsZero() {
		t.Errorf("after approval: %+v, %v", d.Device, err)
	}
	if st, _, _ := w.post("/ui/hosts/"+id+"/approve", url.Values{"csrf": {w.csrf()}, "ring": {"no ring"}}, nil); st != http.StatusBadRequest {
		t.Errorf("a bad ring name: HTTP %d, want 400", st)
	}
}

// TestDashboardHostEligibility: the host page shows what the agent
// reported as blocking patches, for the host and per process.
func TestDashboardHostEligibility(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	dev, id := enroll(t, s, "elig-host", nil)
	w := newWeb(t, s)
	w.signIn(s.AdminToken())
	if _, _, body := w.get("/ui/hosts/" + id); !strings.Contains(body, "no inventory yet") {
		t.Errorf("before any inventory the host page does not say so")
	}
	inv := inventory("00", false)
	inv.Eligibility = []api.Finding{{Check: "capabilities", Status: "block", Message: "missing CAP_CHECKPOINT_RESTORE: needed to open /proc/PID/map_files"}}
	inv.Processes[0].Blockers = []api.Finding{{Check: "tracer", Status: "block", Message: "already traced by pid 7"}}
	if st := dev.do("POST", api.PathDeviceReport, inv, nil); st != 204 {
		t.Fatalf("inventory: HTTP %d", st)
	}
	_, _, body := w.get("/ui/hosts/" + id)
	for _, want := range []string{"block: missing CAP_CHECKPOINT_RESTORE: needed to open /proc/PID/map_files", `title="already traced by pid 7">block: tracer</span>`} {
		if !strings.Contains(body, want) {
			t.Errorf("host page lacks %q", want)
		}
	}
}
