package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/client"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/server"
	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
)

// fleet is a running server and what "hotpatch fleet" needs to reach it.
type fleet struct {
	srv       *server.Server
	caFile    string
	patchFile string // bounds_check's patch, id "bounds", CVE-2026-2000
	sha       string
	target    string // the original build
	buildID   string
}

// startFleet builds and signs a patch with the CLI, then starts a real
// server that trusts its key; the server is closed when the test ends.
func startFleet(t *testing.T) *fleet {
	t.Helper()
	dir, key, pub := keygen(t)
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	orig, fixed := fixtureBuilds(t, fx)
	out := filepath.Join(dir, "bounds.hpatch")
	if code, _, stderr := run(t, "build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", out,
		"--id", "bounds", "--cve", "CVE-2026-2000", "--severity", "high"); code != 0 {
		t.Fatalf("build: exit %d: %s", code, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	id, err := fixture.BuildID(orig.Target)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Publishers: []string{pub}, Tick: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, srv.CA(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return &fleet{srv: srv, caFile: caFile, patchFile: out, sha: hex.EncodeToString(sum[:]), target: orig.Target, buildID: hex.EncodeToString(id)}
}

// run runs "hotpatch fleet ARGS…" with the admin token, or with token when
// it is not empty.
func (f *fleet) run(t *testing.T, token string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	if token == "" {
		token = f.srv.AdminToken()
	}
	return run(t, append([]string{"fleet", "--server", f.srv.URL(), "--ca", f.caFile, "--token", token}, args...)...)
}

// ok runs a fleet command that must succeed and returns its output.
func (f *fleet) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := f.run(t, "", args...)
	if code != 0 {
		t.Fatalf("fleet %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	if stderr != "" {
		t.Errorf("fleet %s: stderr %q", strings.Join(args, " "), stderr)
	}
	return stdout
}

// okJSON runs a fleet command with --json and decodes its output into v.
func (f *fleet) okJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := f.ok(t, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("fleet %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (f *fleet) token(t *testing.T, role string) string {
	t.Helper()
	tok, err := f.srv.NewToken(role, "cli-"+role)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// device is an enrolled device, for the test to speak for.
type device struct {
	id   string
	name string
	c    *client.Client
}

// enroll enrolls a device labelled ring=RING; an operator approves it
// into that ring with "fleet devices approve".
func (f *fleet) enroll(t *testing.T, name, ring string) *device {
	t.Helper()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	anon, err := client.New(f.srv.URL(), f.srv.CA())
	if err != nil {
		t.Fatal(err)
	}
	defer anon.CloseIdleConnections()
	resp, err := anon.Enroll(t.Context(), api.EnrollRequest{Token: f.srv.EnrollToken(), Name: name, Hostname: name,
		Labels: map[string]string{"ring": ring}, CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := client.New(f.srv.URL(), f.srv.CA(), client.WithClientCert([]byte(resp.Cert), keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.CloseIdleConnections)
	if out := f.ok(t, "devices", "approve", resp.DeviceID); !strings.Contains(out, "is in ring "+ring) {
		t.Errorf("devices approve: %q", out)
	}
	return &device{id: resp.DeviceID, name: name, c: dev}
}

// report sends the device's inventory: one process that runs the patch's
// target, with the patch applied or not.
func (d *device) report(t *testing.T, f *fleet, applied bool) {
	t.Helper()
	proc := api.Process{PID: 1000, Exe: f.target, Modules: []api.Module{{Path: f.target, BuildID: f.buildID}}}
	if applied {
		proc.Patches = []api.Applied{{ID: "bounds", Version: 1, State: "applied"}}
	}
	if err := d.c.SendInventory(t.Context(), api.Inventory{Hostname: d.name, Processes: []api.Process{proc}}); err != nil {
		t.Fatal(err)
	}
}

// TestFleet drives a server through "hotpatch fleet": publish, list,
// start a rollout and follow it, devices, events, the report; every
// command in text and in JSON.
func TestFleet(t *testing.T) {
	t.Parallel()
	f := startFleet(t)

	text := f.ok(t, "publish", f.patchFile)
	for _, want := range []string{"published", "bounds level 1", f.sha, "CVE-2026-2000", "high", "build-id " + f.buildID, filepath.Base(f.target)} {
		if !strings.Contains(text, want) {
			t.Errorf("publish output lacks %q:\n%s", want, text)
		}
	}
	var info api.PatchInfo
	f.okJSON(t, &info, "publish", f.patchFile)
	if info.SHA256 != f.sha || info.ID != "bounds" || info.Version != 1 || info.TargetBuildID != f.buildID {
		t.Errorf("publish --json: %+v", info)
	}

	text = f.ok(t, "patches")
	if lines := strings.Split(strings.TrimSpace(text), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") ||
		!strings.Contains(lines[1], "bounds") || !strings.Contains(lines[1], f.sha) || !strings.Contains(lines[1], "CVE-2026-2000") {
		t.Errorf("patches:\n%s", text)
	}
	var ps []api.PatchInfo
	f.okJSON(t, &ps, "patches")
	if len(ps) != 1 || ps[0].SHA256 != f.sha {
		t.Errorf("patches --json: %+v", ps)
	}

	web1 := f.enroll(t, "web-1", "canary")
	web2 := f.enroll(t, "web-2", "broad")
	web2.report(t, f, false)

	var ro api.Rollout
	f.okJSON(t, &ro, "rollout", "start", "bounds", "--rings", "canary,broad", "--soak", "1h", "--max-failures", "1",
		"--window", "broad=22:00-23:00")
	if ro.ID == "" || ro.Soak != time.Hour || ro.MaxFailures != 1 || len(ro.Rings) != 2 || ro.Rings[1].Window != "22:00-23:00" {
		t.Fatalf("rollout start --json: %+v", ro)
	}

	// The canary device applies the patch (as its agent would, after the
	// ring started): the ring ends up soaking.
	web1.report(t, f, true)
	testutil.Eventually(t, time.Minute, func() bool {
		f.okJSON(t, &ro, "rollout", "status", ro.ID)
		return ro.Rings[0].Applied == 1
	}, func() string {
		return fmt.Sprintf("the canary ring never counted the device as applied: %+v", ro.Rings[0])
	})
	text = f.ok(t, "rollout", "status", ro.ID)
	lines := strings.Split(text, "\n")
	var header, canary, broad string
	for _, l := range lines {
		switch fs := strings.Fields(l); {
		case len(fs) == 0:
		case fs[0] == "RING":
			header = l
		case fs[0] == "canary":
			canary = strings.Join(fs, " ")
		case fs[0] == "broad":
			broad = strings.Join(fs, " ")
		}
	}
	if strings.Join(strings.Fields(header), " ") != "RING STATE DEVICES APPLIED NOT NEEDED FAILED PENDING WINDOW" {
		t.Errorf("status header %q", header)
	}
	if !strings.HasPrefix(canary, "canary soaking") || !strings.HasSuffix(canary, " 1 1 0 0 0 -") {
		t.Errorf("canary line %q, want soaking, 1 device, applied", canary)
	}
	if !strings.HasPrefix(broad, "broad pending") || !strings.HasSuffix(broad, "22:00-23:00") {
		t.Errorf("broad line %q", broad)
	}
	for _, want := range []string{"rollout  " + ro.ID, "state    running", f.sha, "soak 1h0m0s, at most 1 failed device(s) per ring"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}

	text = f.ok(t, "rollout", "list")
	if !strings.Contains(text, ro.ID) || !strings.Contains(text, "canary:soaking broad:pending") || !strings.Contains(text, "bounds level 1") {
		t.Errorf("rollout list:\n%s", text)
	}
	var rs []api.Rollout
	f.okJSON(t, &rs, "rollout", "list")
	if len(rs) != 1 || rs[0].ID != ro.ID {
		t.Errorf("rollout list --json: %+v", rs)
	}

	text = f.ok(t, "devices")
	if !strings.Contains(text, web1.id) || !strings.Contains(text, "ring=canary") || !strings.Contains(text, "enrolled") || !strings.Contains(text, "web-2") {
		t.Errorf("devices:\n%s", text)
	}
	var ds []api.Device
	f.okJSON(t, &ds, "devices")
	if len(ds) != 2 {
		t.Errorf("devices --json: %+v", ds)
	}

	text = f.ok(t, "report")
	if !strings.Contains(text, "FIXED ON DISK") || !strings.Contains(text, "CVE-2026-2000") || !strings.Contains(text, ro.ID) {
		t.Errorf("report:\n%s", text)
	}
	var rep api.Report
	f.okJSON(t, &rep, "report", "--cve", "CVE-2026-2000")
	if len(rep.CVEs) != 1 || rep.CVEs[0].Protected != 1 || rep.CVEs[0].Vulnerable != 1 {
		t.Errorf("report --json: %+v", rep)
	}
	text = f.ok(t, "report", "--cve", "CVE-2026-2000")
	if !strings.Contains(text, "web-1") || !strings.Contains(text, "protected") || !strings.Contains(text, "vulnerable") {
		t.Errorf("report --cve: devices missing:\n%s", text)
	}
	records, err := csv.NewReader(strings.NewReader(f.ok(t, "report", "--csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 2 || strings.Join(records[0], ",") != "cve,patches,vulnerable,protected,fixed_on_disk" ||
		strings.Join(records[1], ",") != "CVE-2026-2000,bounds,1,1,0" {
		t.Errorf("report --csv: %q", records)
	}

	text = f.ok(t, "rollout", "halt", ro.ID)
	if !strings.Contains(text, "state    halted") {
		t.Errorf("halt:\n%s", text)
	}
	f.okJSON(t, &ro, "rollout", "resume", ro.ID)
	if ro.State != api.StateRunning {
		t.Errorf("resume --json: state %s", ro.State)
	}

	text = f.ok(t, "devices", "revoke", web1.id)
	if !strings.HasPrefix(text, "revoked device "+web1.id+" (web-1) at ") {
		t.Errorf("revoke: %q", text)
	}

	text = f.ok(t, "events")
	lines = strings.Split(strings.TrimSpace(text), "\n")
	var evs []api.AuditEvent
	for _, l := range strings.Split(strings.TrimSpace(f.ok(t, "events", "--json")), "\n") {
		var e api.AuditEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("events --json line %q: %v", l, err)
		}
		evs = append(evs, e)
	}
	if len(evs) != len(lines) || len(evs) < 5 {
		t.Fatalf("events: %d text lines, %d JSON lines:\n%s", len(lines), len(evs), text)
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{"enrolled", "rollout=" + ro.ID, "device=" + web1.id, "patch=bounds"} {
		if !strings.Contains(all, want) {
			t.Errorf("events lack %q:\n%s", want, all)
		}
	}
	after := evs[len(evs)-3].Seq
	text = f.ok(t, "events", "--after", strconv.FormatInt(evs[0].Seq, 10), "--limit", "1")
	if text != lines[1]+"\n" {
		t.Errorf("events --after %d --limit 1: %q, want %q", evs[0].Seq, text, lines[1])
	}
	if n := strings.Count(f.ok(t, "events", "--after", strconv.FormatInt(after, 10)), "\n"); n != 2 {
		t.Errorf("events --after %d: %d lines, want 2", after, n)
	}
	// The filters, each against what the full log holds.
	count := func(keep func(api.AuditEvent) bool) int {
		n := 0
		for _, e := range evs {
			if keep(e) {
				n++
			}
		}
		return n
	}
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"--type", "enrolled"}, count(func(e api.AuditEvent) bool { return e.Type == "enrolled" })},
		{[]string{"--device", web1.id}, count(func(e api.AuditEvent) bool { return e.Device == web1.id })},
		{[]string{"--rollout", ro.ID}, count(func(e api.AuditEvent) bool { return e.Rollout == ro.ID })},
		{[]string{"--actor", "device:"}, count(func(e api.AuditEvent) bool { return strings.HasPrefix(e.Actor, "device:") })},
		{[]string{"--rollout", ro.ID, "--type", "rollout_halt", "--grep", "HALTED BY"}, 1},
		{[]string{"--type", "no-such-type"}, 0},
	} {
		got := strings.Count(f.ok(t, append([]string{"events"}, c.args...)...), "\n")
		if got != c.want || (c.want == 0 && len(c.args) < 2) {
			t.Errorf("events %s: %d lines, want %d", strings.Join(c.args, " "), got, c.want)
		}
	}

	// Roll back one ring only (the only one started: the rollout is
	// rolled back).
	text = f.ok(t, "rollout", "rollback", "--rings", "canary", ro.ID)
	if !strings.Contains(text, "state    rolled_back") || !strings.Contains(text, "reverting") || !strings.Contains(text, "rings canary rolled back") {
		t.Errorf("rollback --rings canary:\n%s", text)
	}
	if code, _, stderr := f.run(t, "", "rollout", "rollback", "--rings", "nope", ro.ID); code != 1 || !strings.Contains(stderr, `no ring "nope"`) {
		t.Errorf("rollback of a ring the rollout lacks: exit %d: %s", code, stderr)
	}
}

// TestFleetErrors: refusals are one line naming the cause, with exit
// status 1; what the command needs and lacks is a usage error (2).
func TestFleetErrors(t *testing.T) {
	t.Parallel()
	f := startFleet(t)
	if code, _, stderr := f.run(t, "", "publish", f.patchFile); code != 0 {
		t.Fatalf("publish: %s", stderr)
	}
	viewer := f.token(t, api.RoleViewer)
	other, err := pki.Init(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(otherCA, other.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"viewer starts a rollout", []string{"--token", viewer, "rollout", "start", "bounds", "--rings", "all"}, 1, []string{"server: ", "(HTTP 403)"}},
		{"viewer publishes", []string{"--token", viewer, "publish", f.patchFile}, 1, []string{"(HTTP 403)"}},
		{"bad token", []string{"--token", "nope", "patches"}, 1, []string{"(HTTP 401)", "HOTPATCH_TOKEN"}},
		{"wrong CA", []string{"--ca", otherCA, "patches"}, 1, []string{"certificate", "--ca", "HOTPATCH_CA"}},
		{"unknown rollout", []string{"rollout", "status", "ro-nope"}, 1, []string{"(HTTP 404)"}},
		{"no rings", []string{"rollout", "start", "bounds"}, 2, []string{"--rings"}},
		{"window of another ring", []string{"rollout", "start", "bounds", "--rings", "canary", "--window", "broad=01:00-02:00"}, 2, []string{"broad", "not one of --rings"}},
		{"bad window", []string{"rollout", "start", "bounds", "--rings", "canary", "--window", "canary=25:00-02:00"}, 2, []string{"RING=HH:MM-HH:MM"}},
		{"json and csv", []string{"report", "--json", "--csv"}, 2, []string{"--json and --csv"}},
		{"revoke without id", []string{"devices", "revoke"}, 2, []string{"accepts 1 arg"}},
		{"unknown subcommand", []string{"rollout", "explode"}, 2, []string{`unknown command "explode"`}},
		{"missing file", []string{"publish", "/nonexistent.hpatch"}, 1, []string{"/nonexistent.hpatch"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := f.run(t, "", tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			first, _, _ := strings.Cut(stderr, "\n")
			for _, w := range tc.want {
				if !strings.Contains(first, w) {
					t.Errorf("error line %q lacks %q", first, w)
				}
			}
			if n := strings.Count(stderr, "\n"); n != 1 && !(tc.code == 2 && n == 2) {
				t.Errorf("error is not one line (+ the usage hint): %q", stderr)
			}
		})
	}
}

// TestFleetEnvironment: the connection comes from HOTPATCH_SERVER,
// HOTPATCH_TOKEN and HOTPATCH_CA when the flags are not given, and a
// missing one is named.
func TestFleetEnvironment(t *testing.T) {
	f := startFleet(t)
	t.Setenv(envServer, "")
	t.Setenv(envToken, "")
	t.Setenv(envCA, "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fleet", "patches"}, "give --server https://HOST:PORT or set HOTPATCH_SERVER"},
		{[]string{"fleet", "--server", f.srv.URL(), "patches"}, "give --ca FILE (the server's ca.pem) or set HOTPATCH_CA"},
		{[]string{"fleet", "--server", f.srv.URL(), "--ca", f.caFile, "patches"}, "give --token TOKEN or set HOTPATCH_TOKEN"},
	} {
		code, _, stderr := run(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	t.Setenv(envServer, f.srv.URL())
	t.Setenv(envToken, f.srv.AdminToken())
	t.Setenv(envCA, f.caFile)
	code, stdout, stderr := run(t, "fleet", "patches")
	if code != 0 || stdout != "no patch published\n" {
		t.Errorf("patches from the environment: exit %d, %q, %q", code, stdout, stderr)
	}
	code, stdout, _ = run(t, "fleet", "patches", "--json")
	if code != 0 || strings.TrimSpace(stdout) != "[]" {
		t.Errorf("empty patches --json: %q", stdout)
	}
	var buf bytes.Buffer
	if err := writeReport(&buf, &api.Report{}, "CVE-1"); err != nil || buf.String() != "no published patch names CVE-1\n" {
		t.Errorf("empty report: %q, %v", buf.String(), err)
	}
}

// TestFleetTokens: an admin makes tokens with roles from the CLI; a viewer
// token reads but cannot start a rollout, an operator cannot make tokens,
// and the audit log names who made which token.
func TestFleetTokens(t *testing.T) {
	f := startFleet(t)
	viewer := strings.TrimSpace(f.ok(t, "token", "create", "--role", "viewer", "--name", "dashboard"))
	var op struct{ Token, ID, Role, Name string }
	f.okJSON(t, &op, "token", "create", "--role", "operator", "--name", "release-bot")
	if op.Role != "operator" || op.Name != "release-bot" || op.Token == "" || op.Token == viewer {
		t.Fatalf("operator token: %+v", op)
	}
	if code, _, stderr := f.run(t, viewer, "patches"); code != 0 {
		t.Errorf("viewer patches: exit %d: %s", code, stderr)
	}
	if code, _, stderr := f.run(t, viewer, "rollout", "start", "x", "--rings", "all"); code != 1 || !strings.Contains(stderr, "(HTTP 403)") {
		t.Errorf("viewer rollout start: exit %d: %s", code, stderr)
	}
	if code, _, stderr := f.run(t, op.Token, "token", "create", "--role", "admin", "--name", "escalate"); code != 1 || !strings.Contains(stderr, "(HTTP 403)") {
		t.Errorf("operator token create: exit %d: %s", code, stderr)
	}
	if code, _, stderr := f.run(t, "", "token", "create", "--role", "root", "--name", "x"); code != 1 || !strings.Contains(stderr, "viewer, operator or admin") {
		t.Errorf("bad role: exit %d: %s", code, stderr)
	}
	if out := f.ok(t, "events"); !strings.Contains(out, "token_created") || !strings.Contains(out, "dashboard (viewer)") {
		t.Errorf("the audit log does not show the tokens made:\n%s", out)
	}

	// List and revoke.
	var list []api.TokenInfo
	f.okJSON(t, &list, "token", "list")
	byName := map[string]api.TokenInfo{}
	for _, ti := range list {
		byName[ti.Name] = ti
	}
	if len(list) != 4 || !byName["admin"].DataDir || !byName["enroll"].DataDir || byName["enroll"].Role != "enroll" ||
		byName["release-bot"].ID != op.ID || byName["release-bot"].DataDir || byName["dashboard"].Role != "viewer" {
		t.Fatalf("token list: %+v", list)
	}
	if text := f.ok(t, "token", "list"); strings.Contains(text, viewer) || strings.Contains(text, op.Token) || !strings.Contains(text, "data dir") {
		t.Errorf("token list shows a token's value, or no data-dir mark:\n%s", text)
	}
	if text := f.ok(t, "token", "revoke", byName["dashboard"].ID); text != "revoked token "+byName["dashboard"].ID+" (dashboard, viewer)\n" {
		t.Errorf("token revoke: %q", text)
	}
	if code, _, stderr := f.run(t, viewer, "patches"); code != 1 || !strings.Contains(stderr, "unknown token") {
		t.Errorf("a revoked token still works: exit %d: %s", code, stderr)
	}
	second := f.token(t, api.RoleAdmin)
	var secondID string
	f.okJSON(t, &list, "token", "list")
	for _, ti := range list {
		if ti.Name == "cli-admin" {
			secondID = ti.ID
		}
	}
	for _, c := range []struct {
		token, id, want string
	}{
		{"", byName["admin"].ID, "is in the server's data directory"},
		{"", byName["enroll"].ID, "is in the server's data directory"},
		{second, secondID, "is the one this request came with"},
		{"", "0123456789abcdef", "no token"},
		{op.Token, secondID, "(HTTP 403)"},
	} {
		if code, _, stderr := f.run(t, c.token, "token", "revoke", c.id); code != 1 || !strings.Contains(stderr, c.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("token revoke %s: exit %d: %q, want one line with %q", c.id, code, stderr, c.want)
		}
	}
	if out := f.ok(t, "events", "--type", "token_revoked"); strings.Count(out, "\n") != 1 || !strings.Contains(out, "dashboard (viewer)") {
		t.Errorf("the audit log of revocations:\n%s", out)
	}

	// Enrollment tokens: bound to a ring, limited, listed with both.
	var et api.TokenResponse
	f.okJSON(t, &et, "token", "create", "--role", "enroll", "--name", "rack-7", "--ring", "canary", "--uses", "3", "--ttl", "2h")
	if et.Role != api.RoleEnroll || et.Token == "" {
		t.Fatalf("enroll token: %+v", et)
	}
	f.okJSON(t, &list, "token", "list")
	for _, ti := range list {
		if ti.Name == "rack-7" && (ti.Ring != "canary" || ti.MaxUses != 3 || ti.Expires.IsZero()) {
			t.Errorf("enroll token listed as %+v", ti)
		}
	}
	if code, _, stderr := f.run(t, "", "token", "create", "--role", "viewer", "--name", "v", "--ring", "canary"); code != 2 || !strings.Contains(stderr, "--role enroll") {
		t.Errorf("--ring on a viewer token: exit %d: %s", code, stderr)
	}
	// Rotation: the old enrollment token stops working.
	oldEnroll := f.srv.EnrollToken()
	newEnroll := strings.TrimSpace(f.ok(t, "token", "rotate", "enroll"))
	if newEnroll == "" || newEnroll == oldEnroll || f.srv.EnrollToken() != newEnroll {
		t.Errorf("token rotate enroll printed %q (old %q, server has %q)", newEnroll, oldEnroll, f.srv.EnrollToken())
	}
	if code, _, stderr := f.run(t, "", "token", "rotate", "everything"); code != 2 {
		t.Errorf("token rotate everything: exit %d: %s", code, stderr)
	}
}

// TestEnrollTokenNotOnCommandLine: hotpatchd refuses an enrollment token
// given on its command line (every user of the host reads it in ps) and
// names the file and environment variable to use instead.
func TestEnrollTokenNotOnCommandLine(t *testing.T) {
	var stdout, stderr strings.Builder
	code := AgentMain([]string{"--server", "https://127.0.0.1:1", "--ca", "ca.pem", "--state", t.TempDir(), "--enroll-token", "secret"}, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "--enroll-token-file") || !strings.Contains(stderr.String(), envEnrollToken) {
		t.Errorf("hotpatchd --enroll-token: exit %d, %q", code, stderr.String())
	}
}
