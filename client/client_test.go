package client_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/client"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/server"
	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
)

// signed is a signed patch file made from a fixture, and its publisher key.
type signed struct {
	data    []byte
	sha     string
	pubFile string // the publisher's public key, PEM
	target  string // path of the original build
	buildID string // hex build-id of the original build
}

var (
	patchOnce sync.Once
	patchFile signed
	patchErr  error
)

// testPatch builds and signs (once per test binary) the patch of the
// bounds_check fixture, id "bounds", CVE-2026-1000.
func testPatch(t *testing.T) signed {
	t.Helper()
	patchOnce.Do(func() { patchFile, patchErr = makePatch() })
	if patchErr != nil {
		t.Fatal(patchErr)
	}
	return patchFile
}

func makePatch() (signed, error) {
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		return signed{}, err
	}
	orig, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		return signed{}, err
	}
	fixed, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		return signed{}, err
	}
	sp, err := testutil.BuildSigned(orig.Target, fixed.Target, builder.Options{ID: "bounds", CVEs: []string{"CVE-2026-1000"}, Severity: patch.SeverityHigh}, nil)
	if err != nil {
		return signed{}, err
	}
	data := sp.File
	pubPEM, err := patch.MarshalPublicKey(sp.Pub)
	if err != nil {
		return signed{}, err
	}
	dir, err := os.MkdirTemp("", "hotpatch-client-test")
	if err != nil {
		return signed{}, err
	}
	pubFile := filepath.Join(dir, "publisher.pub")
	if err := os.WriteFile(pubFile, pubPEM, 0o600); err != nil {
		return signed{}, err
	}
	id, err := fixture.BuildID(orig.Target)
	if err != nil {
		return signed{}, err
	}
	sum := sha256.Sum256(data)
	return signed{data: data, sha: hex.EncodeToString(sum[:]), pubFile: pubFile, target: orig.Target, buildID: hex.EncodeToString(id)}, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if patchFile.pubFile != "" {
		os.RemoveAll(filepath.Dir(patchFile.pubFile))
	}
	os.Exit(code)
}

// startServer starts a real server on a loopback port, trusting the test
// patch's publisher key; it is closed when the test ends.
func startServer(t *testing.T) *server.Server {
	t.Helper()
	p := testPatch(t)
	srv, err := server.New(server.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Publishers: []string{p.pubFile}, Tick: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// admin returns a client of srv with a token of role (the first admin
// token for api.RoleAdmin).
func admin(t *testing.T, srv *server.Server, role string) *client.Client {
	t.Helper()
	token := srv.AdminToken()
	if role != api.RoleAdmin {
		var err error
		if token, err = srv.NewToken(role, "test-"+role); err != nil {
			t.Fatal(err)
		}
	}
	c, err := client.New(srv.URL(), srv.CA(), client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// enroll enrolls a device with labels and returns its client and id.
func enroll(t *testing.T, srv *server.Server, name string, labels map[string]string) (*client.Client, string) {
	t.Helper()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	anon, err := client.New(srv.URL(), srv.CA())
	if err != nil {
		t.Fatal(err)
	}
	defer anon.CloseIdleConnections()
	resp, err := anon.Enroll(t.Context(), api.EnrollRequest{Token: srv.EnrollToken(), Name: name, Hostname: name + ".test",
		Kernel: "6.12.0", Labels: labels, CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.DeviceID == "" || !bytes.Equal([]byte(resp.CA), srv.CA()) {
		t.Fatalf("enroll answer: id %q, CA matches: %v", resp.DeviceID, resp.CA == string(srv.CA()))
	}
	if ring := labels["ring"]; ring != "" { // an operator approves it into the ring it asks for
		adm, err := client.New(srv.URL(), srv.CA(), client.WithToken(srv.AdminToken()))
		if err != nil {
			t.Fatal(err)
		}
		defer adm.CloseIdleConnections()
		if _, err := adm.ApproveDevice(t.Context(), resp.DeviceID, ring); err != nil {
			t.Fatalf("approve: %v", err)
		}
	}
	c, err := client.New(srv.URL(), []byte(resp.CA), client.WithClientCert([]byte(resp.Cert), keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c, resp.DeviceID
}

// TestPublishAndList publishes a signed patch as an operator and finds it
// in the catalog as a viewer; publishing again is harmless.
func TestPublishAndList(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	p := testPatch(t)
	ctx := t.Context()
	info, err := admin(t, srv, api.RoleOperator).Publish(ctx, p.data)
	if err != nil {
		t.Fatal(err)
	}
	want := api.PatchInfo{SHA256: p.sha, ID: "bounds", Version: 1, CVEs: []string{"CVE-2026-1000"}, Severity: "high",
		TargetName: filepath.Base(p.target), TargetBuildID: p.buildID, Size: len(p.data)}
	ignore := func(pi api.PatchInfo) api.PatchInfo {
		pi.Signer, pi.Functions, pi.Published, pi.Description = "", nil, time.Time{}, ""
		return pi
	}
	if diff := cmp.Diff(want, ignore(*info)); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}
	if info.Signer == "" || len(info.Functions) == 0 || info.Published.IsZero() {
		t.Errorf("published: signer %q, functions %v, time %v", info.Signer, info.Functions, info.Published)
	}
	if _, err := admin(t, srv, api.RoleOperator).Publish(ctx, p.data); err != nil {
		t.Errorf("publishing the same file again: %v", err)
	}
	list, err := admin(t, srv, api.RoleViewer).Patches(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]api.PatchInfo{*info}, list); diff != "" {
		t.Errorf("patches (-want +got):\n%s", diff)
	}
}

// TestRefusals: a viewer may not publish nor start rollouts (403), a bad
// token is 401, an unsigned or tampered patch is refused, and the errors
// carry the status and the server's one-line message.
func TestRefusals(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	p := testPatch(t)
	ctx := t.Context()
	if _, err := admin(t, srv, api.RoleOperator).Publish(ctx, p.data); err != nil {
		t.Fatal(err)
	}
	viewer := admin(t, srv, api.RoleViewer)
	bad, err := client.New(srv.URL(), srv.CA(), client.WithToken("not-a-token"))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.CloseIdleConnections()
	tampered := slices.Clone(p.data)
	tampered[len(tampered)/2] ^= 0xff

	for _, tc := range []struct {
		name   string
		call   func() error
		status int
	}{
		{"viewer starts rollout", func() error {
			_, err := viewer.StartRollout(ctx, api.RolloutRequest{Patch: "bounds", Rings: []string{"all"}})
			return err
		}, http.StatusForbidden},
		{"viewer publishes", func() error { _, err := viewer.Publish(ctx, p.data); return err }, http.StatusForbidden},
		{"viewer revokes", func() error { _, err := viewer.RevokeDevice(ctx, "d-x"); return err }, http.StatusForbidden},
		{"bad token lists", func() error { _, err := bad.Patches(ctx); return err }, http.StatusUnauthorized},
		{"bad token reports", func() error { _, err := bad.Report(ctx, ""); return err }, http.StatusUnauthorized},
		{"tampered patch", func() error {
			_, err := admin(t, srv, api.RoleOperator).Publish(ctx, tampered)
			return err
		}, http.StatusBadRequest},
		{"enroll with a wrong token", func() error {
			_, err := bad.Enroll(ctx, api.EnrollRequest{Token: "wrong", Name: "x", CSR: "x"})
			return err
		}, http.StatusUnauthorized},
		{"device call without a certificate", func() error { _, err := viewer.Sync(ctx, -1, time.Second); return err }, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want a *client.Error", err, err)
			}
			if ce.Status != tc.status || !client.IsStatus(err, tc.status) {
				t.Errorf("status %d, want %d (%v)", ce.Status, tc.status, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "server: ") || !strings.HasSuffix(msg, fmt.Sprintf(" (HTTP %d)", tc.status)) ||
				strings.Contains(msg, "\n") || ce.Message == "" || ce.Message == http.StatusText(tc.status) {
				t.Errorf("error %q is not the server's one-line message", msg)
			}
		})
	}
}

// TestWrongCA: a client that trusts another CA refuses the server in the
// TLS handshake, before any token is sent.
func TestWrongCA(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	other, err := pki.Init(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(srv.URL(), other.CertPEM(), client.WithToken(srv.AdminToken()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	_, err = c.Patches(t.Context())
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if !errors.As(err, &unknown) && !errors.As(err, &verify) {
		t.Fatalf("error %v (%T), want a certificate verification error", err, err)
	}
	if client.IsStatus(err, http.StatusUnauthorized) {
		t.Error("the request reached the server")
	}
}

// TestNew refuses what cannot work before any connection.
func TestNew(t *testing.T) {
	t.Parallel()
	ca, err := pki.Init(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, keyPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url string
		ca        []byte
		opts      []client.Option
		want      string
	}{
		{"http", "http://127.0.0.1:8443", ca.CertPEM(), nil, "HTTPS only"},
		{"no host", "https://", ca.CertPEM(), nil, "is not https://HOST"},
		{"query", "https://127.0.0.1:8443/?x=1", ca.CertPEM(), nil, "no user, query or fragment"},
		{"no CA", "https://127.0.0.1:8443", nil, nil, "no CA certificate"},
		{"key without certificate", "https://127.0.0.1:8443", ca.CertPEM(), []client.Option{client.WithClientCert(nil, keyPEM)}, "given together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.New(tc.url, tc.ca, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "client: ") {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	c, err := client.New("https://127.0.0.1:8443/", ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if c.URL() != "https://127.0.0.1:8443" {
		t.Errorf("URL %q", c.URL())
	}
	if _, err := c.RolloutAction(t.Context(), "r-1", "explode"); err == nil || !strings.Contains(err.Error(), "halt, resume or rollback") {
		t.Errorf("unknown action: %v", err)
	}
	if _, err := c.PatchFile(t.Context(), "../../etc/passwd"); err == nil || !strings.Contains(err.Error(), "not a SHA-256") {
		t.Errorf("PatchFile with a path: %v", err)
	}
}

// fakeServer is a TLS server whose answers the test decides: it plays a
// compromised or broken server, which a real one cannot be made to be.
func fakeServer(t *testing.T, h http.HandlerFunc) *client.Client {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	c, err := client.New(ts.URL, caPEM, client.WithToken("t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestPatchFileDigest: a patch file whose SHA-256 is not the one asked for
// is refused, whatever the server says.
func TestPatchFileDigest(t *testing.T) {
	t.Parallel()
	good := []byte("the signed patch file")
	evil := []byte("another file")
	sum := sha256.Sum256(good)
	sha := hex.EncodeToString(sum[:])
	var serve []byte
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != api.PathDevicePatch+sha {
			http.NotFound(w, r)
			return
		}
		w.Write(serve)
	})
	serve = good
	got, err := c.PatchFile(t.Context(), strings.ToUpper(sha))
	if err != nil || !bytes.Equal(got, good) {
		t.Fatalf("PatchFile: %q, %v", got, err)
	}
	serve = evil
	got, err = c.PatchFile(t.Context(), sha)
	var de *client.DigestError
	if !errors.As(err, &de) || got != nil {
		t.Fatalf("PatchFile of a substituted file: %q, %v; want a *DigestError", got, err)
	}
	evilSum := sha256.Sum256(evil)
	if de.Want != sha || de.Got != hex.EncodeToString(evilSum[:]) {
		t.Errorf("DigestError %+v", de)
	}
}

// TestAnswers: error bodies that are not api.Error JSON give their first
// line, bounded; a JSON answer beyond its bound is refused; redirects are
// not followed.
func TestAnswers(t *testing.T) {
	t.Parallel()
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("cve") {
		case "html":
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "  <html>bad gateway\x1b[31m</html>\nsecond line\n")
		case "long":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, strings.Repeat("x", 100000))
		case "empty":
			w.WriteHeader(http.StatusTeapot)
		case "json":
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"error":"rollout r-1 is done"}`)
		case "big":
			w.Write(bytes.Repeat([]byte(" "), client.MaxJSON+1))
		case "redirect":
			http.Redirect(w, r, "https://example.com/steal", http.StatusFound)
		default:
			fmt.Fprint(w, `{"cves":[{"cve":"CVE-1","patches":["p"],"vulnerable":1}]}`)
		}
	})
	ctx := t.Context()
	for _, tc := range []struct {
		cve    string
		status int
		msg    string
	}{
		{"html", http.StatusBadGateway, "<html>bad gateway [31m</html>"},
		{"long", http.StatusServiceUnavailable, strings.Repeat("x", 300) + "…"},
		{"empty", http.StatusTeapot, "I'm a teapot"},
		{"json", http.StatusConflict, "rollout r-1 is done"},
		{"redirect", http.StatusFound, ""},
	} {
		_, err := c.Report(ctx, tc.cve)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != tc.status || (tc.msg != "" && ce.Message != tc.msg) {
			t.Errorf("%s: %v, want status %d message %q", tc.cve, err, tc.status, tc.msg)
		}
	}
	if _, err := c.Report(ctx, "big"); !errors.Is(err, client.ErrTooLarge) {
		t.Errorf("big answer: %v, want ErrTooLarge", err)
	}
	rep, err := c.Report(ctx, "")
	if err != nil || len(rep.CVEs) != 1 || rep.CVEs[0].Vulnerable != 1 {
		t.Errorf("report: %+v, %v", rep, err)
	}
}

// TestDeviceFlow follows a device from enrollment through a rollout: the
// desired state names the patch, the file downloads and checks out, the
// device's inventory and events make the rollout progress and the report
// count it protected; revoking the device shuts it out at once.
func TestDeviceFlow(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	p := testPatch(t)
	ctx := t.Context()
	adm := admin(t, srv, api.RoleAdmin)
	dev, id := enroll(t, srv, "web-1", map[string]string{"ring": "canary"})

	first, err := dev.Sync(ctx, -1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Patches) != 0 {
		t.Errorf("desired patches before any rollout: %+v", first.Patches)
	}
	devs, err := adm.Devices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].ID != id || devs[0].Name != "web-1" || devs[0].Labels["ring"] != "canary" || devs[0].Hostname != "web-1.test" {
		t.Fatalf("devices: %+v", devs)
	}

	if _, err := adm.Publish(ctx, p.data); err != nil {
		t.Fatal(err)
	}
	ro, err := adm.StartRollout(ctx, api.RolloutRequest{Patch: "bounds", Rings: []string{"canary", "broad"}, Soak: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ro.ID == "" || ro.Patch.SHA256 != p.sha || len(ro.Rings) != 2 || ro.Rings[0].Name != "canary" || ro.Rings[1].Name != "broad" {
		t.Fatalf("rollout: %+v", ro)
	}

	// The long-poll answers as soon as the state changed after the cursor.
	var want *api.DesiredPatch
	cursor := first.Cursor
	testutil.Eventually(t, time.Minute, func() bool {
		st, err := dev.Sync(ctx, cursor, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cursor = st.Cursor
		for i := range st.Patches {
			if st.Patches[i].SHA256 == p.sha {
				want = &st.Patches[i]
			}
		}
		return want != nil
	}, "the device's desired state never named the patch")
	if want.Action != api.ActionApply || want.ID != "bounds" || want.Rollout != ro.ID || want.TargetBuildID != p.buildID {
		t.Errorf("desired patch %+v", want)
	}
	data, err := dev.PatchFile(ctx, want.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, p.data) {
		t.Error("downloaded file differs from the published one")
	}

	inv := api.Inventory{Hostname: "web-1.test", Kernel: "6.12.0", Processes: []api.Process{{
		PID: 4242, Exe: p.target,
		Modules: []api.Module{{Path: p.target, BuildID: p.buildID}},
		Patches: []api.Applied{{ID: "bounds", Version: 1, State: "applied"}},
	}}}
	if err := dev.SendInventory(ctx, inv); err != nil {
		t.Fatal(err)
	}
	if err := dev.SendEvents(ctx, []api.DeviceEvent{{Time: time.Now(), Type: "applied", PID: 4242, Patch: "bounds"}}); err != nil {
		t.Fatal(err)
	}

	var ring api.Ring
	testutil.Eventually(t, time.Minute, func() bool {
		r, err := adm.Rollout(ctx, ro.ID)
		if err != nil {
			t.Fatal(err)
		}
		ring = r.Rings[0]
		return ring.Applied == 1
	}, func() string { return fmt.Sprintf("the canary ring never counted the device as applied: %+v", ring) })
	if ring.Devices != 1 || ring.Applied != 1 || ring.Failed != 0 || ring.Pending != 0 {
		t.Errorf("canary ring %+v, want 1 device, applied", ring)
	}
	rs, err := adm.Rollouts(ctx)
	if err != nil || len(rs) != 1 || rs[0].ID != ro.ID {
		t.Errorf("rollouts: %+v, %v", rs, err)
	}

	rep, err := adm.Report(ctx, "CVE-2026-1000")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.CVEs) != 1 || rep.CVEs[0].CVE != "CVE-2026-1000" || rep.CVEs[0].Protected != 1 || rep.CVEs[0].Vulnerable != 0 {
		t.Errorf("report: %+v", rep.CVEs)
	}

	evs, err := adm.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]bool{}
	for i, e := range evs {
		types[e.Type] = true
		if i > 0 && e.Seq <= evs[i-1].Seq {
			t.Errorf("events out of order: %d after %d", e.Seq, evs[i-1].Seq)
		}
	}
	if !types["enrolled"] || !types["applied"] || len(evs) < 4 {
		t.Errorf("audit log %+v lacks the enrollment or the device's event", evs)
	}
	if len(evs) > 1 {
		later, err := adm.Events(ctx, evs[0].Seq, 1)
		if err != nil || len(later) != 1 || later[0].Seq != evs[1].Seq {
			t.Errorf("events after %d, limit 1: %+v, %v", evs[0].Seq, later, err)
		}
	}

	// The canary ring soaks for an hour: halt, resume, roll back.
	for _, step := range []struct{ action, state string }{
		{client.ActionHalt, api.StateHalted},
		{client.ActionResume, api.StateRunning},
		{client.ActionRollback, api.StateRolledBack},
	} {
		r, err := adm.RolloutAction(ctx, ro.ID, step.action)
		if err != nil {
			t.Fatalf("%s: %v", step.action, err)
		}
		if r.State != step.state {
			t.Errorf("after %s: state %s, want %s", step.action, r.State, step.state)
		}
	}
	st, err := dev.Sync(ctx, -1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Patches) != 1 || st.Patches[0].Action != api.ActionRevert || st.Patches[0].SHA256 != p.sha {
		t.Errorf("desired state after rollback: %+v, want the patch reverted", st.Patches)
	}

	d, err := adm.RevokeDevice(ctx, id)
	if err != nil || d.Revoked.IsZero() {
		t.Fatalf("revoke: %+v, %v", d, err)
	}
	_, err = dev.Sync(ctx, -1, time.Second)
	if !client.IsStatus(err, http.StatusUnauthorized) && !client.IsStatus(err, http.StatusForbidden) {
		t.Errorf("sync of a revoked device: %v, want 401 or 403", err)
	}
}
