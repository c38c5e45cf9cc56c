package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/pgtest"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
)

// caller speaks the API over real TLS: as an admin (token) or a device
// (client certificate).
type caller struct {
	t     testing.TB
	base  string
	http  *http.Client
	token string
}

func newCaller(t testing.TB, s *Server, token string, certPEM, keyPEM []byte) *caller {
	t.Helper()
	cfg, err := pki.ClientTLS(s.CA(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &caller{t: t, base: s.URL(), token: token, http: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 60 * time.Second}}
}

// do sends a request and decodes a JSON answer into out; it returns the
// status.
func (c *caller) do(method, path string, body, out any) int {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set(api.HeaderAuthorization, "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 && out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" || strings.Contains(e.Error, "\n") {
			c.t.Errorf("%s %s: HTTP %d without a one-line error: %s", method, path, resp.StatusCode, data)
		}
	}
	return resp.StatusCode
}

func startServer(t *testing.T, dir string) *Server {
	t.Helper()
	return startServerDB(t, dir, "")
}

func startServerDB(t *testing.T, dir, db string) *Server {
	t.Helper()
	os.Chmod(dir, 0o700) // t.TempDir is 0755: the server would warn
	s, err := New(Config{DataDir: dir, DB: db, Listen: "127.0.0.1:0", AnyPublisher: true, Tick: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}

// enroll enrolls a device with labels and returns a caller for it; an
// operator approves it into the ring its "ring" label asks for.
func enroll(t testing.TB, s *Server, name string, labels map[string]string) (*caller, string) {
	t.Helper()
	dev, id := enrollWith(t, s, s.EnrollToken(), name, labels)
	if ring := labels["ring"]; ring != "" {
		admin := newCaller(t, s, s.AdminToken(), nil, nil)
		if st := admin.do("POST", api.PathDevice+id+"/approve", api.ApproveRequest{Ring: ring}, nil); st != 200 {
			t.Fatalf("approve %s: HTTP %d", name, st)
		}
	}
	return dev, id
}

// enrollWith enrolls a device with an enrollment token, unapproved
// unless the token binds it to a ring.
func enrollWith(t testing.TB, s *Server, token, name string, labels map[string]string) (*caller, string) {
	t.Helper()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	var resp api.EnrollResponse
	anon := newCaller(t, s, "", nil, nil)
	if st := anon.do("POST", api.PathEnroll, api.EnrollRequest{Token: token, Name: name, Hostname: name, Kernel: "6.18", Labels: labels, CSR: string(csr)}, &resp); st != 200 {
		t.Fatalf("enroll %s: HTTP %d", name, st)
	}
	return newCaller(t, s, "", []byte(resp.Cert), keyPEM), resp.DeviceID
}

// testPatch builds and signs the bounds_check fixture's patch.
func testPatch(t *testing.T) ([]byte, *patch.Patch) {
	t.Helper()
	sp, _ := testutil.FixturePatch(t, "bounds_check", builder.Options{ID: "bounds-fix", CVEs: []string{"CVE-2026-0001"}}, nil)
	return sp.File, sp.Patch
}

func inventory(buildID string, patched bool) api.Inventory {
	proc := api.Process{PID: 100, Exe: "/usr/bin/bounds", Modules: []api.Module{{Path: "/usr/bin/bounds", BuildID: buildID}}}
	if patched {
		proc.Patches = []api.Applied{{ID: "bounds-fix", Version: 1, State: "applied"}}
	}
	return api.Inventory{Hostname: "h", Kernel: "6.18", Processes: []api.Process{proc}}
}

func syncAs(t *testing.T, dev *caller, cursor int64, wait time.Duration) api.SyncResponse {
	t.Helper()
	var r api.SyncResponse
	if st := dev.do("GET", fmt.Sprintf("%s?cursor=%d&wait=%s", api.PathDeviceSync, cursor, wait), nil, &r); st != 200 {
		t.Fatalf("sync: HTTP %d", st)
	}
	return r
}

func waitRollout(t *testing.T, admin *caller, id string, what string, ok func(api.Rollout) bool) api.Rollout {
	t.Helper()
	var ro api.Rollout
	testutil.Eventually(t, time.Minute, func() bool {
		ro = api.Rollout{}
		admin.do("GET", api.PathRollout+id, nil, &ro)
		return ok(ro)
	}, func() string { return fmt.Sprintf("rollout never %s: %+v", what, ro) })
	return ro
}

// waitLongPolls waits until s holds n device long-polls.
func waitLongPolls(t *testing.T, s *Server, n int64) {
	t.Helper()
	testutil.Eventually(t, time.Minute, func() bool { return s.metrics.longPolls.Load() == n }, "%d long-polls held", n)
}

// TestRollout drives a rollout through two rings with devices speaking
// the real protocol: canary applies it, broad starts, a failure on broad
// exceeds the budget, the rollout halts and every device that got it is
// told to revert; a server restart loses nothing; a revoked device and a
// viewer token are refused; the CVE report counts the devices.
func TestRollout(t *testing.T) { testRollout(t, "") }

func testRollout(t *testing.T, db string) {
	dir := t.TempDir()
	s := startServerDB(t, dir, db)
	data, p := testPatch(t)
	buildID := fmt.Sprintf("%x", p.Target.BuildID)
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	viewerTok, err := s.NewToken(api.RoleViewer, "auditor")
	if err != nil {
		t.Fatal(err)
	}
	viewer := newCaller(t, s, viewerTok, nil, nil)

	var info api.PatchInfo
	if st := admin.do("POST", api.PathPatches, data, &info); st != 200 || info.ID != "bounds-fix" || info.TargetBuildID != buildID {
		t.Fatalf("publish: HTTP %d %+v", st, info)
	}
	if st := viewer.do("POST", api.PathPatches, data, nil); st != 403 {
		t.Errorf("viewer publish: HTTP %d, want 403", st)
	}
	if st := newCaller(t, s, "nope", nil, nil).do("GET", api.PathPatches, nil, nil); st != 401 {
		t.Errorf("bad token: HTTP %d, want 401", st)
	}
	canary, canaryID := enroll(t, s, "canary-1", map[string]string{"ring": "canary"})
	broad, broadID := enroll(t, s, "broad-1", map[string]string{"ring": "broad"})
	first := syncAs(t, canary, 0, time.Second)
	if !first.Changed || len(first.Patches) != 0 {
		t.Fatalf("first sync: %+v", first)
	}
	canary.do("POST", api.PathDeviceReport, inventory(buildID, false), nil)
	broad.do("POST", api.PathDeviceReport, inventory(buildID, false), nil)

	// A long-poll held with the current cursor returns when the rollout
	// starts.
	held := make(chan api.SyncResponse, 1)
	go func() { held <- syncAs(t, canary, first.Cursor, 30*time.Second) }()
	waitLongPolls(t, s, 1)
	req := api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary", "broad"}, MaxFailures: 0}
	if st := viewer.do("POST", api.PathRollouts, req, nil); st != 403 {
		t.Errorf("viewer rollout start: HTTP %d, want 403", st)
	}
	var ro api.Rollout
	if st := admin.do("POST", api.PathRollouts, req, &ro); st != 200 || ro.State != api.StateRunning {
		t.Fatalf("rollout start: HTTP %d %+v", st, ro)
	}
	if got := testutil.Receive(t, held, 10*time.Second, "the long-poll did not return when the rollout started"); !got.Changed || len(got.Patches) != 1 || got.Patches[0].Action != api.ActionApply || got.Patches[0].SHA256 != info.SHA256 {
		t.Errorf("long-poll answer: %+v", got)
	}
	before := syncAs(t, broad, 0, time.Second)
	if len(before.Patches) != 0 {
		t.Errorf("broad got %+v before its ring started", before.Patches)
	}
	var file []byte
	req2, _ := http.NewRequest("GET", s.URL()+api.PathDevicePatch+info.SHA256, nil)
	if resp, err := canary.http.Do(req2); err == nil {
		file, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if !bytes.Equal(file, data) {
		t.Errorf("the device downloaded %d bytes, not the published file", len(file))
	}

	// Canary applies it: the ring completes, broad starts.
	canary.do("POST", api.PathDeviceReport, inventory(buildID, true), nil)
	waitRollout(t, admin, ro.ID, "reached broad", func(r api.Rollout) bool { return r.Rings[1].State == api.RingActive })
	// The ring's start is stored a moment before the change counter moves:
	// broad long-polls from where it was, as an agent does.
	got := syncAs(t, broad, before.Cursor, 10*time.Second)
	if len(got.Patches) != 1 || got.Patches[0].Action != api.ActionApply {
		t.Errorf("broad after its ring started: %+v", got.Patches)
	}
	var rep api.Report
	admin.do("GET", api.PathReport+"?cve=CVE-2026-0001", nil, &rep)
	if len(rep.CVEs) != 1 || rep.CVEs[0].Protected != 1 || rep.CVEs[0].Vulnerable != 1 {
		t.Errorf("report: %+v", rep)
	}

	// A failure on broad exceeds the budget: halted, reverted in broad;
	// canary, which finished, keeps the fix until an operator decides.
	broad.do("POST", api.PathDeviceEvents, api.DeviceEvents{Events: []api.DeviceEvent{{Time: time.Now(), Type: "rolled_back", Patch: "bounds-fix", Signal: "SIGSEGV"}}}, nil)
	halted := waitRollout(t, admin, ro.ID, "halted", func(r api.Rollout) bool { return r.State == api.StateHalted })
	if !strings.Contains(halted.Reason, "budget") || !strings.Contains(halted.Reason, "rings canary keep the patch") {
		t.Errorf("halt reason %q", halted.Reason)
	}
	for dev, want := range map[*caller]string{canary: api.ActionApply, broad: api.ActionRevert} {
		if got := syncAs(t, dev, 0, time.Second); len(got.Patches) != 1 || got.Patches[0].Action != want {
			t.Errorf("after the halt: %+v, want %s", got.Patches, want)
		}
	}

	// A restart loses nothing.
	s.Close()
	s = startServerDB(t, dir, db)
	defer s.Close()
	admin = newCaller(t, s, s.AdminToken(), nil, nil)
	admin.do("GET", api.PathRollout+ro.ID, nil, &ro)
	if ro.State != api.StateHalted || ro.Rings[0].State != api.RingDone {
		t.Errorf("after a restart: %+v", ro)
	}
	canary.base, broad.base = s.URL(), s.URL()
	if got := syncAs(t, broad, first.Cursor, time.Second); !got.Changed || len(got.Patches) != 1 || got.Patches[0].Action != api.ActionRevert {
		t.Errorf("after a restart the device got %+v", got)
	}
	// The operator rolls canary back too.
	if st := admin.do("POST", api.PathRollout+ro.ID+"/rollback?rings=canary", nil, &ro); st != 200 || ro.State != api.StateRolledBack {
		t.Errorf("rollback of canary: HTTP %d %+v", st, ro)
	}
	if got := syncAs(t, canary, 0, time.Second); len(got.Patches) != 1 || got.Patches[0].Action != api.ActionRevert {
		t.Errorf("canary after its rollback: %+v", got.Patches)
	}

	// A revoked device is refused.
	if st := admin.do("POST", api.PathDevice+broadID+"/revoke", nil, nil); st != 200 {
		t.Errorf("revoke: HTTP %d", st)
	}
	if st := broad.do("GET", api.PathDeviceSync+"?cursor=0&wait=1s", nil, nil); st != 403 {
		t.Errorf("revoked device: HTTP %d, want 403", st)
	}
	var devs []api.Device
	admin.do("GET", api.PathDevices, nil, &devs)
	if len(devs) != 2 || devs[0].ID != canaryID || devs[1].Revoked.IsZero() {
		t.Errorf("devices: %+v", devs)
	}
	var evs []api.AuditEvent
	admin.do("GET", api.PathEvents, nil, &evs)
	types := map[string]bool{}
	for _, e := range evs {
		types[e.Type] = true
	}
	for _, want := range []string{"enrolled", "published", "rollout_started", "ring_started", "ring_done", "rolled_back", "rollout_halted", "revoked"} {
		if !types[want] {
			t.Errorf("no %s in the audit log", want)
		}
	}
}

// TestFirstStart: the data directory gets the CA, the tokens (0600) and the
// database; a bad enrollment token is refused.
func TestFirstStart(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	defer s.Close()
	for _, f := range []string{"ca.pem", "ca.key", AdminTokenFile, EnrollTokenFile, DBFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if strings.HasSuffix(f, ".token") && st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", f, st.Mode().Perm())
		}
	}
	key, _, _ := pki.NewKey()
	csr, _ := pki.CSR(key, "x")
	if st := newCaller(t, s, "", nil, nil).do("POST", api.PathEnroll, api.EnrollRequest{Token: s.AdminToken(), CSR: string(csr)}, nil); st != 401 {
		t.Errorf("enrolling with the admin token: HTTP %d, want 401", st)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// TestRolloutPostgres runs the rollout test on PostgreSQL.
func TestRolloutPostgres(t *testing.T) {
	t.Parallel()
	testRollout(t, pgtest.URL(t))
}

// TestTwoReplicas: two servers on one PostgreSQL database serve one fleet:
// a device enrolled and long-polling on one replica gets a rollout
// started on the other within a tick, and both drive the same rollout
// without doing its steps twice.
func TestTwoReplicas(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	dir := t.TempDir()
	a := startServerDB(t, dir, url)
	defer a.Close()
	b := startServerDB(t, dir, url) // the same CA and tokens: a copy of the data directory would do
	defer b.Close()
	data, p := testPatch(t)
	buildID := fmt.Sprintf("%x", p.Target.BuildID)
	dev, _ := enroll(t, a, "replica-dev", map[string]string{"ring": "canary"})
	first := syncAs(t, dev, 0, time.Second)
	dev.do("POST", api.PathDeviceReport, inventory(buildID, false), nil)
	adminB := newCaller(t, b, b.AdminToken(), nil, nil)
	if st := adminB.do("POST", api.PathPatches, data, nil); st != 200 {
		t.Fatalf("publish on b: HTTP %d", st)
	}
	held := make(chan api.SyncResponse, 1)
	go func() { held <- syncAs(t, dev, first.Cursor, 30*time.Second) }()
	waitLongPolls(t, a, 1)
	var ro api.Rollout
	if st := adminB.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary"}}, &ro); st != 200 {
		t.Fatalf("rollout on b: HTTP %d", st)
	}
	if got := testutil.Receive(t, held, 10*time.Second, "a long-poll on replica a missed a rollout started on replica b"); len(got.Patches) != 1 || got.Patches[0].Action != api.ActionApply {
		t.Errorf("the device on a got %+v", got)
	}
	dev.do("POST", api.PathDeviceReport, inventory(buildID, true), nil)
	adminA := newCaller(t, a, a.AdminToken(), nil, nil)
	waitRollout(t, adminA, ro.ID, "done", func(r api.Rollout) bool { return r.State == api.StateDone })
	// A step's audit event is written just after the step is stored, so
	// wait for the last one; then each must be there once.
	n := map[string]int{}
	testutil.Eventually(t, time.Minute, func() bool {
		var evs []api.AuditEvent
		adminA.do("GET", api.PathEvents, nil, &evs)
		clear(n)
		for _, e := range evs {
			n[e.Type]++
		}
		return n["rollout_done"] > 0
	}, func() string { return fmt.Sprintf("no rollout_done audit event: %v", n) })
	if n["ring_started"] != 1 || n["ring_done"] != 1 || n["rollout_done"] != 1 {
		t.Errorf("steps recorded %v; each once", n)
	}
}

// TestWindows: a ring outside its maintenance window waits (its devices
// get nothing); a critical rollout ignores the window.
func TestWindows(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	data, _ := testPatch(t)
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	admin.do("POST", api.PathPatches, data, nil)
	dev, _ := enroll(t, s, "late", map[string]string{"ring": "canary"})
	later := time.Now().Add(2 * time.Hour)
	window := later.Format("15:04") + "-" + later.Add(time.Hour).Format("15:04")
	var ro api.Rollout
	if st := admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary"}, Windows: map[string]string{"canary": window}}, &ro); st != 200 {
		t.Fatalf("start: HTTP %d", st)
	}
	waitRollout(t, admin, ro.ID, "waiting", func(r api.Rollout) bool { return r.Rings[0].State == api.RingWaiting })
	if got := syncAs(t, dev, 0, time.Second); len(got.Patches) != 0 {
		t.Errorf("a device of a ring outside its window got %+v", got.Patches)
	}
	critical := api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary"}, Windows: map[string]string{"canary": window}, Critical: true}
	if st := admin.do("POST", api.PathRollouts, critical, nil); st != 409 {
		t.Fatalf("a second rollout of a running patch: HTTP %d, want 409", st)
	}
	if st := admin.do("POST", api.PathRollout+ro.ID+"/halt", nil, nil); st != 200 {
		t.Fatalf("halt: HTTP %d", st)
	}
	if st := admin.do("POST", api.PathRollouts, critical, &ro); st != 200 {
		t.Fatalf("start critical: HTTP %d", st)
	}
	waitRollout(t, admin, ro.ID, "active", func(r api.Rollout) bool { return r.Rings[0].State == api.RingActive })
	if got := syncAs(t, dev, 0, time.Second); len(got.Patches) != 1 || got.Patches[0].Rollout != ro.ID {
		t.Errorf("the critical rollout did not reach the device: %+v", got.Patches)
	}
	if st := admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary"}, Windows: map[string]string{"canary": "2-4"}}, nil); st != 400 {
		t.Errorf("a bad window: HTTP %d, want 400", st)
	}
}

// TestLateFailure: a failure that reaches the server after its ring
// finished (a soak of zero, the crash report still on its way) halts the
// rollout all the same; the patch comes off in that ring only, and the
// next ring, which did not fail, keeps it until an operator decides.
func TestLateFailure(t *testing.T) {
	s, admin, buildID := publishedFleet(t)
	devs := ringDevices(t, s, buildID, "canary", "broad")
	canary, broad := devs[0], devs[1]
	var ro api.Rollout
	if st := admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary", "broad"}}, &ro); st != 200 {
		t.Fatalf("rollout start: HTTP %d", st)
	}
	canary.do("POST", api.PathDeviceReport, inventory(buildID, true), nil)
	waitRollout(t, admin, ro.ID, "past canary", func(r api.Rollout) bool {
		return r.Rings[0].State == api.RingDone && r.Rings[1].State == api.RingActive
	})

	crash := api.DeviceEvents{Events: []api.DeviceEvent{{Time: time.Now(), Type: "crash", Patch: "bounds-fix", PID: 100, Signal: "SIGSEGV"}}}
	if st := canary.do("POST", api.PathDeviceEvents, crash, nil); st != 204 {
		t.Fatalf("events: HTTP %d", st)
	}
	got := waitRollout(t, admin, ro.ID, "halted", func(r api.Rollout) bool { return r.State == api.StateHalted })
	if got.Rings[0].State != api.RingHalted || got.Rings[0].Failed != 1 || !strings.Contains(got.Reason, "ring canary: 1 device failed") {
		t.Errorf("after the late crash: %+v", got)
	}
	for dev, want := range map[*caller]string{canary: api.ActionRevert, broad: api.ActionApply} {
		if d := syncAs(t, dev, 0, time.Second); len(d.Patches) != 1 || d.Patches[0].Action != want {
			t.Errorf("a device after the halt: %+v, want %s", d.Patches, want)
		}
	}
}

// TestDeviceEventMessage: an agent event with a pid and nothing else to
// say reads "pid N", without a dangling colon.
func TestDeviceEventMessage(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	dev, id := enroll(t, s, "msg-host", nil)
	evs := api.DeviceEvents{Events: []api.DeviceEvent{
		{Time: time.Now(), Type: "applied", PID: 42, Patch: "p"},
		{Time: time.Now(), Type: "apply_failed", PID: 43, Patch: "p", Error: "busy"},
	}}
	if st := dev.do("POST", api.PathDeviceEvents, evs, nil); st != 204 {
		t.Fatalf("events: HTTP %d", st)
	}
	var got []api.AuditEvent
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	if st := admin.do("GET", api.PathEvents+"?device="+id, nil, &got); st != 200 {
		t.Fatalf("events: HTTP %d", st)
	}
	var msgs []string
	for _, e := range got {
		if e.Type == "applied" || e.Type == "apply_failed" {
			msgs = append(msgs, e.Message)
		}
	}
	if got, want := strings.Join(msgs, "|"), "pid 42|pid 43: busy"; got != want {
		t.Errorf("messages %q, want %q", got, want)
	}
}

// TestCount: audit messages say "1 device", not "1 devices".
func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0 devices", 1: "1 device", 2: "2 devices"} {
		if got := count(n, "device"); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
