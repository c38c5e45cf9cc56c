package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
	"github.com/hotpatch/hotpatch/server/store"
)

// The tests of docs/server.md's threat model: what a local user of an
// agent host, a device, a leaked token, a flood or a store failure can
// and cannot do to a rollout.

// crash is a crash report of the test patch.
func crash(at time.Time) api.DeviceEvents {
	return api.DeviceEvents{Events: []api.DeviceEvent{{Time: at, Type: "crash", Patch: "bounds-fix", PID: 100, Signal: "SIGSEGV"}}}
}

// auditHas waits until the audit log has an event of a type that
// matches ok.
func auditHas(t *testing.T, admin *caller, typ string, ok func(api.AuditEvent) bool) api.AuditEvent {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		var evs []api.AuditEvent
		admin.do("GET", api.PathEvents+"?type="+typ, nil, &evs)
		for _, e := range evs {
			if ok(e) {
				return e
			}
		}
	}
	t.Fatalf("no %s event in the audit log", typ)
	return api.AuditEvent{}
}

// publishedFleet starts a server (closed with the test) with the test
// patch published; it returns the server, an admin caller and the
// patch's target build-id.
func publishedFleet(t *testing.T) (*Server, *caller, string) {
	t.Helper()
	s := startServer(t, t.TempDir())
	t.Cleanup(func() { s.Close() })
	data, p := testPatch(t)
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	if st := admin.do("POST", api.PathPatches, data, nil); st != 200 {
		t.Fatalf("publish: HTTP %d", st)
	}
	return s, admin, fmt.Sprintf("%x", p.Target.BuildID)
}

// ringDevices enrolls one device per ring, approved into it, named
// RING-1, each reporting the patch's target running unpatched.
func ringDevices(t *testing.T, s *Server, buildID string, rings ...string) []*caller {
	t.Helper()
	var devs []*caller
	for _, ring := range rings {
		dev, _ := enroll(t, s, ring+"-1", map[string]string{"ring": ring})
		dev.do("POST", api.PathDeviceReport, inventory(buildID, false), nil)
		devs = append(devs, dev)
	}
	return devs
}

// TestEnrollmentApproval: a device enrolled with the data directory's
// token is in no ring whatever label it sends: it gets no rollout and its
// crash reports count against no budget (the attack of issue 13: a fake
// ring=canary device halting a rollout). An operator approves it into a
// ring; a token bound to a ring approves at enrollment; tokens expire and
// run out of uses.
func TestEnrollmentApproval(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	ctx := context.Background()
	data, p := testPatch(t)
	buildID := fmt.Sprintf("%x", p.Target.BuildID)
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	admin.do("POST", api.PathPatches, data, nil)

	real, realID := enroll(t, s, "real", map[string]string{"ring": "canary"})
	fake, fakeID := enrollWith(t, s, s.EnrollToken(), "fake", map[string]string{"ring": "canary"})
	real.do("POST", api.PathDeviceReport, inventory(buildID, false), nil)
	fake.do("POST", api.PathDeviceReport, inventory(buildID, false), nil)
	var devs []api.Device
	admin.do("GET", api.PathDevices, nil, &devs)
	for _, d := range devs {
		if d.ID == fakeID && (!d.Approved.IsZero() || d.Ring != "") {
			t.Errorf("a device approved itself: %+v", d)
		}
	}

	var ro api.Rollout
	if st := admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary"}, Soak: time.Hour}, &ro); st != 200 {
		t.Fatalf("start: HTTP %d", st)
	}
	real.do("POST", api.PathDeviceReport, inventory(buildID, true), nil)
	waitRollout(t, admin, ro.ID, "soaking", func(r api.Rollout) bool { return r.Rings[0].State == api.RingSoaking })
	if got := syncAs(t, fake, 0, time.Second); len(got.Patches) != 0 {
		t.Errorf("an unapproved device got %+v", got.Patches)
	}
	if st := fake.do("POST", api.PathDeviceEvents, crash(time.Now()), nil); st != 204 {
		t.Fatalf("events: HTTP %d", st)
	}
	auditHas(t, admin, "crash", func(e api.AuditEvent) bool { return e.Device == fakeID })
	got, err := s.advance(ctx, ro.ID)
	if err != nil || got.State != api.StateRunning || got.Rings[0].Devices != 1 || got.Rings[0].Failed != 0 {
		t.Errorf("after an unapproved device's crash: %+v, %v", got, err)
	}

	// A token bound to a ring, for one use.
	var tok api.TokenResponse
	if st := admin.do("POST", api.PathTokens, api.TokenRequest{Role: api.RoleEnroll, Name: "rack 4", Ring: "broad", Uses: 1}, &tok); st != 200 {
		t.Fatalf("enroll token: HTTP %d", st)
	}
	_, bound := enrollWith(t, s, tok.Token, "rack4-1", map[string]string{"ring": "canary"})
	d, err := s.st.Device(ctx, bound)
	if err != nil || d.Ring != "broad" || d.Approved.IsZero() {
		t.Errorf("a device of a ring-bound token: %+v, %v", d.Device, err)
	}
	key, _, _ := pki.NewKey()
	csr, _ := pki.CSR(key, "x")
	anon := newCaller(t, s, "", nil, nil)
	if st := anon.do("POST", api.PathEnroll, api.EnrollRequest{Token: tok.Token, Name: "rack4-2", CSR: string(csr)}, nil); st != 401 {
		t.Errorf("a second enrollment with a one-use token: HTTP %d, want 401", st)
	}
	// An expired token.
	if st := admin.do("POST", api.PathTokens, api.TokenRequest{Role: api.RoleEnroll, Name: "short", TTL: time.Nanosecond}, &tok); st != 200 {
		t.Fatalf("enroll token: HTTP %d", st)
	}
	if st := anon.do("POST", api.PathEnroll, api.EnrollRequest{Token: tok.Token, Name: "late", CSR: string(csr)}, nil); st != 401 {
		t.Errorf("enrolling with an expired token: HTTP %d, want 401", st)
	}
	for _, bad := range []api.TokenRequest{{Role: api.RoleEnroll, Name: "n", Uses: -1}, {Role: api.RoleEnroll, Name: "n", TTL: -time.Second}, {Role: api.RoleEnroll, Name: "n", Ring: "all"}, {Role: api.RoleViewer, Name: "n", Ring: "canary"}} {
		if st := admin.do("POST", api.PathTokens, bad, nil); st != 400 {
			t.Errorf("token %+v: HTTP %d, want 400", bad, st)
		}
	}

	// The operator approves the fake device: it counts from the next ring
	// on, and its ring is the operator's choice.
	if st := admin.do("POST", api.PathDevice+fakeID+"/approve", api.ApproveRequest{Ring: "broad"}, nil); st != 200 {
		t.Fatalf("approve: HTTP %d", st)
	}
	if d, _ := s.st.Device(ctx, fakeID); d.Ring != "broad" || d.Approved.IsZero() {
		t.Errorf("approved device: %+v", d.Device)
	}
	auditHas(t, admin, "device_approved", func(e api.AuditEvent) bool { return e.Device == fakeID })
	_ = realID
}

// TestTokenRotation: rotating the data directory's tokens, by command or
// by removing the file and restarting, revokes the old values.
func TestTokenRotation(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	oldAdmin, oldEnroll := s.AdminToken(), s.EnrollToken()
	admin := newCaller(t, s, oldAdmin, nil, nil)
	var resp api.TokenResponse
	if st := admin.do("POST", api.PathTokenRotate, api.RotateRequest{Token: "enroll"}, &resp); st != 200 || resp.Token == "" || resp.Token == oldEnroll {
		t.Fatalf("rotate enroll: HTTP %d %+v", st, resp)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, EnrollTokenFile)); strings.TrimSpace(string(b)) != resp.Token {
		t.Errorf("enroll.token holds %q, not the new token", b)
	}
	key, _, _ := pki.NewKey()
	csr, _ := pki.CSR(key, "x")
	anon := newCaller(t, s, "", nil, nil)
	if st := anon.do("POST", api.PathEnroll, api.EnrollRequest{Token: oldEnroll, Name: "x", CSR: string(csr)}, nil); st != 401 {
		t.Errorf("the old enrollment token: HTTP %d, want 401", st)
	}
	if st := admin.do("POST", api.PathTokenRotate, api.RotateRequest{Token: "admin"}, &resp); st != 200 {
		t.Fatalf("rotate admin: HTTP %d", st)
	}
	if st := admin.do("GET", api.PathDevices, nil, nil); st != 401 {
		t.Errorf("the old admin token after rotation: HTTP %d, want 401", st)
	}
	newAdmin := resp.Token
	if st := newCaller(t, s, newAdmin, nil, nil).do("GET", api.PathDevices, nil, nil); st != 200 {
		t.Errorf("the new admin token: HTTP %d", st)
	}

	// Remove the file and restart, as the server's message says.
	s.Close()
	os.Remove(filepath.Join(dir, AdminTokenFile))
	s = startServer(t, dir)
	defer s.Close()
	if s.AdminToken() == newAdmin {
		t.Fatal("a restart without admin.token kept the token")
	}
	if st := newCaller(t, s, newAdmin, nil, nil).do("GET", api.PathDevices, nil, nil); st != 401 {
		t.Errorf("the admin token of a removed file: HTTP %d, want 401", st)
	}
}

// TestSlowBodies: a few hundred connections that send a request's
// headers and then stall on the body hold nothing for long: enrollments
// beyond the limit of unauthenticated requests are answered at once, the
// others, and requests refused for their credentials, when the body
// deadline passes; meanwhile /healthz, devices and admins are served.
func TestSlowBodies(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	s, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", AnyPublisher: true, Tick: 20 * time.Millisecond, MaxUnauthenticated: 8, BodyTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dev, _ := enroll(t, s, "dev", map[string]string{"ring": "canary"})
	admin := newCaller(t, s, s.AdminToken(), nil, nil)

	// Most go for enrollment; some send a wrong token to an
	// authenticated route and a small body, some a dashboard form.
	const attackers = 300
	host := strings.TrimPrefix(s.URL(), "https://")
	tlsCfg, _ := pki.ClientTLS(s.CA(), nil, nil)
	closed := make(chan error, attackers)
	var conns []*tls.Conn
	for i := range attackers {
		c, err := tls.Dial("tcp", host, tlsCfg)
		if err != nil {
			t.Fatalf("attacker dial: %v", err)
		}
		conns = append(conns, c)
		switch i % 6 {
		case 0:
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer wrong\r\nContent-Length: 1000\r\n\r\n{", api.PathPatches, host)
		case 1:
			fmt.Fprintf(c, "POST /ui/rollouts HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\na", host)
		default:
			fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", api.PathEnroll, host)
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			// The server must answer or close within its deadlines; the
			// attacker keeps trickling meanwhile.
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			r := bufio.NewReader(c)
			_, err := http.ReadResponse(r, nil)
			if err == nil {
				_, err = io.Copy(io.Discard, r)
			}
			closed <- err
		})
	}
	// Served during the attack.
	if st := newCaller(t, s, "", nil, nil).do("GET", api.PathHealth, nil, nil); st != 200 {
		t.Errorf("/healthz during the attack: HTTP %d", st)
	}
	syncAs(t, dev, 0, time.Second)
	if st := admin.do("GET", api.PathDevices, nil, nil); st != 200 {
		t.Errorf("an admin during the attack: HTTP %d", st)
	}
	wg.Wait()
	close(closed)
	held := 0
	for err := range closed {
		if err != nil && strings.Contains(err.Error(), "timeout") {
			held++
		}
	}
	if held > 0 {
		t.Errorf("%d of %d slow-body connections were still held open after 60s", held, attackers)
	}
}

// TestDeviceClock: the failure budget is decided on the server's clock: a
// crash a device dates ten minutes back (its clock is behind) still
// counts. Unknown event types are recorded as such, long messages cut.
func TestDeviceClock(t *testing.T) {
	s, admin, buildID := publishedFleet(t)
	dev := ringDevices(t, s, buildID, "canary")[0]
	id := mustDeviceID(t, s, "canary-1")
	var ro api.Rollout
	admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary"}, Soak: time.Hour}, &ro)
	waitRollout(t, admin, ro.ID, "active", func(r api.Rollout) bool { return r.Rings[0].State == api.RingActive })
	if st := dev.do("POST", api.PathDeviceEvents, crash(time.Now().Add(-10*time.Minute)), nil); st != 204 {
		t.Fatalf("events: HTTP %d", st)
	}
	waitRollout(t, admin, ro.ID, "halted", func(r api.Rollout) bool { return r.State == api.StateHalted })

	evs := api.DeviceEvents{Events: []api.DeviceEvent{
		{Time: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), Type: "made_up", Message: "hello"},
		{Time: time.Now(), Type: "applied", Message: strings.Repeat("x", 100000)},
	}}
	if st := dev.do("POST", api.PathDeviceEvents, evs, nil); st != 204 {
		t.Fatalf("events: HTTP %d", st)
	}
	e := auditHas(t, admin, unknownEventType, func(e api.AuditEvent) bool { return e.Device == id })
	if !strings.Contains(e.Message, `"made_up"`) || e.Time.Year() != time.Now().Year() {
		t.Errorf("unknown event recorded as %+v", e)
	}
	e = auditHas(t, admin, "applied", func(e api.AuditEvent) bool { return e.Device == id })
	if len(e.Message) > maxEventText+100 {
		t.Errorf("a message of %d bytes was stored", len(e.Message))
	}
	many := api.DeviceEvents{Events: make([]api.DeviceEvent, maxDeviceEvents+1)}
	for i := range many.Events {
		many.Events[i].Type = "applied"
	}
	if st := dev.do("POST", api.PathDeviceEvents, many, nil); st != 413 {
		t.Errorf("%d events in one report: HTTP %d, want 413", len(many.Events), st)
	}
}

// TestRolloutValidation: the API refuses what the CLI refuses.
func TestRolloutValidation(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	data, _ := testPatch(t)
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	admin.do("POST", api.PathPatches, data, nil)
	for name, req := range map[string]api.RolloutRequest{
		"negative budget": {Patch: "bounds-fix", Rings: []string{"canary"}, MaxFailures: -1},
		"negative soak":   {Patch: "bounds-fix", Rings: []string{"canary"}, Soak: -time.Second},
		"empty ring":      {Patch: "bounds-fix", Rings: []string{""}},
		"duplicate ring":  {Patch: "bounds-fix", Rings: []string{"canary", "canary"}},
		"odd ring name":   {Patch: "bounds-fix", Rings: []string{"can ary"}},
		"no ring":         {Patch: "bounds-fix"},
	} {
		if st := admin.do("POST", api.PathRollouts, req, nil); st != 400 {
			t.Errorf("%s: HTTP %d, want 400", name, st)
		}
	}
	var ros []api.Rollout
	admin.do("GET", api.PathRollouts, nil, &ros)
	if len(ros) != 0 {
		t.Errorf("refused requests made rollouts: %+v", ros)
	}
}

// TestRolloutsOfOnePatch: one rollout of a patch runs at a time; a second
// rollout that halts on a failure reverts the patch only where it brought
// it, not where an earlier rollout still wants it.
func TestRolloutsOfOnePatch(t *testing.T) {
	s, admin, buildID := publishedFleet(t)
	devs := ringDevices(t, s, buildID, "canary", "broad")
	canary, broad := devs[0], devs[1]

	var first, second api.Rollout
	if st := admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary"}}, &first); st != 200 {
		t.Fatalf("first: HTTP %d", st)
	}
	if st := admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"broad"}}, nil); st != 409 {
		t.Errorf("a second running rollout of one patch: HTTP %d, want 409", st)
	}
	canary.do("POST", api.PathDeviceReport, inventory(buildID, true), nil)
	waitRollout(t, admin, first.ID, "done", func(r api.Rollout) bool { return r.State == api.StateDone })

	// The second rollout covers canary again, then broad; broad fails.
	if st := admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"all"}}, &second); st != 200 {
		t.Fatalf("second: HTTP %d", st)
	}
	waitRollout(t, admin, second.ID, "active", func(r api.Rollout) bool { return r.Rings[0].State == api.RingActive })
	broad.do("POST", api.PathDeviceEvents, crash(time.Now()), nil)
	waitRollout(t, admin, second.ID, "halted", func(r api.Rollout) bool { return r.State == api.StateHalted })
	if got := syncAs(t, canary, 0, time.Second); len(got.Patches) != 1 || got.Patches[0].Action != api.ActionApply || got.Patches[0].Rollout != first.ID {
		t.Errorf("canary, patched by the first rollout, after the second halted: %+v", got.Patches)
	}
	if got := syncAs(t, broad, 0, time.Second); len(got.Patches) != 1 || got.Patches[0].Action != api.ActionRevert {
		t.Errorf("broad after the second rollout halted: %+v", got.Patches)
	}
}

// TestPublishSameLevel: a different file under a published id and level
// is refused; the same file again is not. A server with no publisher key
// does not start unless told to accept any signer.
func TestPublishSameLevel(t *testing.T) {
	if _, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}); !errors.Is(err, ErrNoPublisher) {
		t.Errorf("a server with no publisher key: %v, want ErrNoPublisher", err)
	}
	s := startServer(t, t.TempDir())
	defer s.Close()
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	a, _ := testPatch(t)
	b, _ := testPatch(t) // signed by another key: another file
	if st := admin.do("POST", api.PathPatches, a, nil); st != 200 {
		t.Fatalf("publish: HTTP %d", st)
	}
	if st := admin.do("POST", api.PathPatches, a, nil); st != 200 {
		t.Errorf("the same file again: HTTP %d", st)
	}
	if st := admin.do("POST", api.PathPatches, b, nil); st != 409 {
		t.Errorf("another file under the same id and level: HTTP %d, want 409", st)
	}
}

// TestStoreFailureNoStep: when the store cannot say whether a ring's
// devices failed, the rollout takes no step (the health gate does not
// open) and the error is returned; an audit write outlives its client's
// cancelled request.
func TestStoreFailureNoStep(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	defer s.Close()
	ctx := context.Background()
	data, p := testPatch(t)
	buildID := fmt.Sprintf("%x", p.Target.BuildID)
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	admin.do("POST", api.PathPatches, data, nil)
	dev, _ := enroll(t, s, "d", map[string]string{"ring": "canary"})
	dev.do("POST", api.PathDeviceReport, inventory(buildID, false), nil)
	var ro api.Rollout
	admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary"}}, &ro)
	waitRollout(t, admin, ro.ID, "active", func(r api.Rollout) bool { return r.Rings[0].State == api.RingActive })

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.audit(cancelled, api.AuditEvent{Actor: "test", Type: "after_disconnect"}); err != nil {
		t.Errorf("audit with a cancelled request: %v", err)
	}
	if evs, _ := s.st.FindEvents(ctx, store.EventFilter{Type: "after_disconnect"}); len(evs) != 1 {
		t.Errorf("the audit event of a disconnected client was lost: %+v", evs)
	}

	// Break the events table behind the server's back.
	s.driving.Lock() // no tick between the break and the device's report
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, DBFile)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ALTER TABLE events RENAME TO events_gone`); err != nil {
		t.Fatal(err)
	}
	if err := s.st.SetInventory(ctx, mustDeviceID(t, s, "d"), inventory(buildID, true), time.Now()); err != nil {
		t.Fatal(err)
	}
	s.driving.Unlock()
	got, err := s.advance(ctx, ro.ID)
	if err == nil || got.Rings[0].State != api.RingActive {
		t.Errorf("advance with a broken store: %v, ring %s; want an error and no step", err, got.Rings[0].State)
	}
	if cur, _ := s.st.Rollout(ctx, ro.ID); cur.Rings[0].State != api.RingActive || cur.State != api.StateRunning {
		t.Errorf("stored after a store failure: %+v", cur.Rollout)
	}
	if _, err := db.Exec(`ALTER TABLE events_gone RENAME TO events`); err != nil {
		t.Fatal(err)
	}
	waitRollout(t, admin, ro.ID, "done once the store works", func(r api.Rollout) bool { return r.State == api.StateDone })
}

func mustDeviceID(t *testing.T, s *Server, name string) string {
	t.Helper()
	ds, err := s.st.Devices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Name == name {
			return d.ID
		}
	}
	t.Fatalf("no device %s", name)
	return ""
}

// TestPrivateFiles: a data directory and keys that other users could read
// are made private at start, with a warning; new files are private.
func TestPrivateFiles(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	s.Close()
	for _, f := range []string{"", "ca.key", "server.key", AdminTokenFile, EnrollTokenFile, DBFile} {
		os.Chmod(filepath.Join(dir, f), 0o755)
	}
	var logged bytes.Buffer
	s, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", AnyPublisher: true, Log: log.New(&logged, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range []string{"", "ca.key", "server.key", AdminTokenFile, EnrollTokenFile, DBFile} {
		want := os.FileMode(0o600)
		if f == "" {
			want = 0o700
		}
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", f, st.Mode().Perm(), err, want)
		}
		if !strings.Contains(logged.String(), filepath.Join(dir, f)+" had mode") {
			t.Errorf("no warning about %s: %s", f, logged.String())
		}
	}
	fresh := t.TempDir()
	startServer(t, fresh).Close()
	for _, f := range []string{DBFile, DBFile + "-wal", DBFile + "-shm"} {
		if st, err := os.Stat(filepath.Join(fresh, f)); err == nil && st.Mode().Perm()&0o077 != 0 {
			t.Errorf("a new %s has mode %v", f, st.Mode().Perm())
		}
	}
}

// TestFailedAuth: unknown bearer tokens and failed sign-ins are audited
// and, past a limit per address, refused for a while; every answer
// carries HSTS; a patch from an untrusted key is refused naming the
// server's --publisher flag.
func TestFailedAuth(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	pub := filepath.Join(t.TempDir(), "other.pub")
	writeOtherKey(t, pub)
	s, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", AuthFailures: 5, Publishers: []string{pub}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bad := newCaller(t, s, "not-a-token", nil, nil)
	for range 5 {
		if st := bad.do("GET", api.PathDevices, nil, nil); st != 401 {
			t.Fatalf("an unknown token: HTTP %d, want 401", st)
		}
	}
	if st := bad.do("GET", api.PathDevices, nil, nil); st != 429 {
		t.Errorf("the sixth unknown token within a minute: HTTP %d, want 429", st)
	}
	w := newWeb(t, s)
	if st, _, _ := w.post("/ui/signin", url.Values{"token": {"wrong"}}, nil); st != 429 {
		t.Errorf("a sign-in from a blocked address: HTTP %d, want 429", st)
	}
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	e := auditHas(t, admin, "auth_failed", func(e api.AuditEvent) bool { return strings.HasPrefix(e.Actor, "address:127.0.0.1") })
	if !strings.Contains(e.Message, "unknown bearer token") {
		t.Errorf("auth_failed event %+v", e)
	}
	req, _ := http.NewRequest("GET", s.URL()+api.PathHealth, nil)
	resp, err := admin.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h := resp.Header.Get("Strict-Transport-Security"); !strings.Contains(h, "max-age=") {
		t.Errorf("HSTS header %q", h)
	}
	data, _ := testPatch(t)
	var msg api.Error
	req, _ = http.NewRequest("POST", s.URL()+api.PathPatches, bytes.NewReader(data))
	req.Header.Set(api.HeaderAuthorization, "Bearer "+s.AdminToken())
	if resp, err = admin.http.Do(req); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !bytes.Contains(body, []byte("--publisher")) || bytes.Contains(body, []byte("--trust")) {
		t.Errorf("untrusted publisher: HTTP %d %s %v", resp.StatusCode, body, msg)
	}
}

// TestRingSettlesAtOnce: a ring whose devices' last inventories already
// tell where they stand (the patch applied, or no process of the target)
// settles without waiting for a new report.
func TestRingSettlesAtOnce(t *testing.T) {
	s, admin, buildID := publishedFleet(t)
	idle, _ := enroll(t, s, "idle", map[string]string{"ring": "canary"})
	done, _ := enroll(t, s, "done", map[string]string{"ring": "canary"})
	idle.do("POST", api.PathDeviceReport, inventory("00", false), nil) // runs nothing the patch is for
	done.do("POST", api.PathDeviceReport, inventory(buildID, true), nil)
	var ro api.Rollout
	admin.do("POST", api.PathRollouts, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary"}}, &ro)
	got := waitRollout(t, admin, ro.ID, "done", func(r api.Rollout) bool { return r.State == api.StateDone })
	if got.Rings[0].NotNeeded != 1 || got.Rings[0].Applied != 1 {
		t.Errorf("ring %+v", got.Rings[0])
	}
}

// TestCloseTwice and the change counter: Close may be called again, and
// the counter seen never moves back.
func TestCloseTwice(t *testing.T) {
	s := startServer(t, t.TempDir())
	s.sawChange(s.seq + 5)
	high := s.seq
	s.sawChange(high - 3)
	if s.seq != high {
		t.Errorf("the change counter moved back from %d to %d", high, s.seq)
	}
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("a second close: %v", err)
	}
}

// writeOtherKey writes the public key of a new key pair (not the one
// testPatch signs with).
func writeOtherKey(t *testing.T, path string) {
	t.Helper()
	_, pub, err := patch.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := patch.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTrustDir: the keys in Config.TrustDir are publisher keys (the
// command passes /etc/hotpatch/trusted); a patch signed by another key is
// refused. The server reads no machine-wide directory unless told, so what
// a machine holds does not steer a test's server.
func TestTrustDir(t *testing.T) {
	trusted, p := testPatch(t)
	other, _ := testPatch(t) // another key
	dir := t.TempDir()
	pem, err := patch.MarshalPublicKey(p.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "release.pub"), pem, 0o644); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	os.Chmod(data, 0o700)
	s, err := New(Config{DataDir: data, Listen: "127.0.0.1:0", TrustDir: dir, Tick: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("New with a trust directory and no --publisher: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	if st := admin.do("POST", api.PathPatches, other, nil); st != 403 {
		t.Errorf("a patch signed by a key outside the trust directory: HTTP %d, want 403", st)
	}
	if st := admin.do("POST", api.PathPatches, trusted, nil); st != 200 {
		t.Errorf("a patch signed by the trusted key: HTTP %d, want 200", st)
	}
}
