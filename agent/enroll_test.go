package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/client"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/server"
	"github.com/hotpatch/hotpatch/server/api"
)

// fleet is a hotpatch-server running in the test process, and an admin
// client of it.
type fleet struct {
	srv    *server.Server
	admin  *client.Client
	caFile string
}

func newFleet(t *testing.T, dir, publisherKey string) *fleet {
	t.Helper()
	srv, err := server.New(server.Config{DataDir: filepath.Join(dir, "server-data"), Listen: "127.0.0.1:0",
		Publishers: []string{publisherKey}, Tick: 100 * time.Millisecond, ExposureEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	admin, err := client.New(srv.URL(), srv.CA(), client.WithToken(srv.AdminToken()))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "server-ca.pem")
	if err := os.WriteFile(caFile, srv.CA(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &fleet{srv: srv, admin: admin, caFile: caFile}
}

// enrolledConfig is an agent config for a host enrolled with f: no local
// patch directory; the enrollment token, in a file, puts the device in
// the ring its labels ask for (canary if none).
func (f *fleet) enrolledConfig(dir string, h *host, pub string, labels map[string]string) Config {
	cfg := agentConfig(dir, h, pub)
	cfg.PatchDir = ""
	ring := labels["ring"]
	if ring == "" {
		ring = "canary"
	}
	tok, err := f.admin.NewEnrollToken(context.Background(), "test", ring, 0, 0)
	if err != nil {
		panic(err)
	}
	cfg.EnrollTokenFile = filepath.Join(dir, "enroll.token")
	if err := os.WriteFile(cfg.EnrollTokenFile, []byte(tok.Token+"\n"), 0o600); err != nil {
		panic(err)
	}
	cfg.Server, cfg.CA, cfg.Labels = f.srv.URL(), f.caFile, labels
	return cfg
}

// rollout publishes a signed patch and rolls it out to every device.
func (f *fleet) rollout(t *testing.T, data []byte) *api.Rollout {
	t.Helper()
	ctx := context.Background()
	info, err := f.admin.Publish(ctx, data)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	ro, err := f.admin.StartRollout(ctx, api.RolloutRequest{Patch: info.SHA256, Rings: []string{"all"}})
	if err != nil {
		t.Fatalf("start rollout: %v", err)
	}
	return ro
}

// TestAgentEnrolled: an agent enrolls with a server (one key, one
// certificate, one device, kept across a restart that has no token),
// applies the patch a rollout brings to the process of its host, reports
// it (the ring counts the device as applied), and reverts it when the
// rollout is rolled back.
func TestAgentEnrolled(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	_, data := signed(t, orig, fixed, "bounds-fix", key)
	f := newFleet(t, dir, pub)
	ctx := context.Background()

	proc, pid := h.start(t, orig)
	cfg := f.enrolledConfig(dir, h, pub, map[string]string{"ring": "canary", "site": "test"})
	first := startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "enrolled", is("enrolled", 0))

	idDir := filepath.Join(cfg.StateDir, identityDir)
	for _, name := range []string{idKeyFile, idCertFile, idCAFile, idDeviceFile} {
		st, err := os.Stat(filepath.Join(idDir, name))
		if err != nil {
			t.Fatalf("identity: %v", err)
		}
		if name == idKeyFile && st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
	}
	id, err := loadIdentity(cfg.StateDir)
	if err != nil || id == nil {
		t.Fatalf("identity: %v, %v", id, err)
	}

	// A restart reuses the identity and needs no token.
	first.stop()
	cfg.EnrollToken, cfg.EnrollTokenFile = "", ""
	startAgent(t, cfg)
	waitFor(t, 30*time.Second, func() bool { return countEvents(cfg.StateDir, is("started", 0)) == 2 }, "a second start")
	var devs []api.Device
	waitFor(t, 30*time.Second, func() bool {
		devs, err = f.admin.Devices(ctx)
		return err == nil && len(devs) == 1 && devs[0].Processes > 0
	}, "one device reporting its processes: %v %+v", err, devs)
	if n := countEvents(cfg.StateDir, is("enrolled", 0)); n != 1 {
		t.Errorf("the agent enrolled %d times", n)
	}
	want := api.Device{ID: id.DeviceID, Labels: map[string]string{"ring": "canary", "site": "test"}}
	got := api.Device{ID: devs[0].ID, Labels: devs[0].Labels}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("device (-want +got):\n%s", diff)
	}
	if again, err := loadIdentity(cfg.StateDir); err != nil || again.DeviceID != id.DeviceID || string(again.Key) != string(id.Key) {
		t.Errorf("the identity changed across the restart: %v", err)
	}

	ro := f.rollout(t, data)
	waitEvent(t, cfg.StateDir, 60*time.Second, "applied from the server", is("applied", pid))
	if !answersFixed(t, proc) {
		t.Errorf("the process does not answer as fixed")
	}
	waitFor(t, 30*time.Second, func() bool {
		r, err := f.admin.Rollout(ctx, ro.ID)
		return err == nil && len(r.Rings) == 1 && r.Rings[0].Applied == 1
	}, "the server counting the device as applied")
	// The agent's events reach the server's audit log, the stop of the
	// first run included.
	waitFor(t, 30*time.Second, func() bool {
		evs, err := f.admin.Events(ctx, 0, 1000)
		seen := map[string]bool{}
		for _, e := range evs {
			if e.Actor == "device:"+id.DeviceID {
				seen[e.Type] = true
			}
		}
		return err == nil && seen["applied"] && seen["stopped"] && seen["patch_loaded"]
	}, "device events in the server's log")

	if _, err := f.admin.RolloutAction(ctx, ro.ID, client.ActionRollback); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	waitEvent(t, cfg.StateDir, 60*time.Second, "reverted after the rollback", is("reverted", pid))
	if answersFixed(t, proc) {
		t.Errorf("the process still answers as fixed after the rollback")
	}
	if left, _ := filepath.Glob(filepath.Join(cfg.StateDir, serverDirName, "*.hpatch")); len(left) != 0 {
		t.Errorf("server patches left after the rollback: %v", left)
	}
}

// TestAgentEnrolledRevoked: a revoked device's agent logs the refusal and
// keeps running with what it has: the patch stays applied, and processes
// started later still get it.
func TestAgentEnrolledRevoked(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	_, data := signed(t, orig, fixed, "bounds-fix", key)
	f := newFleet(t, dir, pub)
	ctx := context.Background()

	proc, pid := h.start(t, orig)
	cfg := f.enrolledConfig(dir, h, pub, nil)
	startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "enrolled", is("enrolled", 0))
	f.rollout(t, data)
	waitEvent(t, cfg.StateDir, 60*time.Second, "applied from the server", is("applied", pid))

	id, err := loadIdentity(cfg.StateDir)
	if err != nil || id == nil {
		t.Fatalf("identity: %v, %v", id, err)
	}
	if _, err := f.admin.RevokeDevice(ctx, id.DeviceID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	// The long-poll in flight ends within its wait; the next request is
	// refused.
	waitEvent(t, cfg.StateDir, 90*time.Second, "server_refused", is("server_refused", 0))
	if !answersFixed(t, proc) {
		t.Errorf("the patch was reverted after the device was revoked")
	}
	later, pid2 := h.start(t, orig)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied to a process started after the revocation", is("applied", pid2))
	if !answersFixed(t, later) {
		t.Errorf("the later process does not answer as fixed")
	}
	if n := countEvents(cfg.StateDir, func(e Event) bool { return e.Type == "reverted" || e.Type == "patch_removed" }); n != 0 {
		t.Errorf("%d reverts or removals after the revocation", n)
	}
}

// TestAgentEnrolledLocalWins: a patch in the local patch directory wins
// over a server patch with the same id; the agent says so once.
func TestAgentEnrolledLocalWins(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	_, local := signed(t, orig, fixed, "bounds-fix", key)
	fromServer := testutil.SignedPatch(t, orig, fixed, builder.Options{ID: "bounds-fix", Version: 2}, key).File
	f := newFleet(t, dir, pub)

	_, pid := h.start(t, orig)
	cfg := f.enrolledConfig(dir, h, pub, nil)
	cfg.PatchDir = filepath.Join(dir, "patches")
	if err := os.WriteFile(filepath.Join(cfg.PatchDir, "bounds.hpatch"), local, 0o644); err != nil {
		t.Fatal(err)
	}
	startAgent(t, cfg)
	e := waitEvent(t, cfg.StateDir, 30*time.Second, "applied from the local directory", is("applied", pid))
	if e.Version != 1 {
		t.Errorf("applied version %d, want the local 1", e.Version)
	}
	f.rollout(t, fromServer)
	o := waitEvent(t, cfg.StateDir, 60*time.Second, "patch_overridden", is("patch_overridden", 0))
	if o.Patch != "bounds-fix" || o.Version != 2 {
		t.Errorf("overridden: %s", o)
	}
	// Let the agent read both directories three more times (each file it
	// refuses is a proof): still one notice, one apply.
	for i := range 3 {
		junk := filepath.Join(cfg.PatchDir, fmt.Sprintf("junk%d.hpatch", i))
		if err := os.WriteFile(junk, []byte("not a patch"), 0o644); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, cfg.StateDir, time.Minute, "patch_refused for "+junk, func(e Event) bool { return e.Type == "patch_refused" && e.File == junk })
	}
	if n := countEvents(cfg.StateDir, is("patch_overridden", 0)); n != 1 {
		t.Errorf("%d patch_overridden events, want 1", n)
	}
	if n := countEvents(cfg.StateDir, is("applied", 0)); n != 1 {
		t.Errorf("%d applied events, want 1", n)
	}
}

// TestOutbox: events are kept in order until sent, bounded, and a batch
// sent while the bound trimmed the front removes only what was sent.
func TestOutbox(t *testing.T) {
	o := newOutbox(3)
	for i := range 2 {
		o.push(Event{Type: "busy", PID: i + 1})
	}
	evs, end := o.peek(10)
	if len(evs) != 2 {
		t.Fatalf("peek: %d events, want 2", len(evs))
	}
	// Three more while the batch is in flight: the oldest two are
	// dropped (the bound is 3).
	for i := range 3 {
		o.push(Event{Type: "applied", PID: 10 + i})
	}
	o.drop(end)
	if diff := cmp.Diff([]string{"applied:10", "applied:11", "applied:12"}, outboxed(o)); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
	if !o.takeInventoryDue() || o.takeInventoryDue() {
		t.Errorf("an applied event should make the inventory due once")
	}
	// Nothing in flight: trimmed events are counted, and said so first.
	o.push(Event{Type: "reverted", PID: 13})
	o.push(Event{Type: "reverted", PID: 14})
	got := outboxed(o)
	if diff := cmp.Diff([]string{"events_dropped", "applied:12", "reverted:13", "reverted:14"}, got); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
	if evs, _ := o.peek(1); !strings.Contains(evs[0].Message, "2 events were dropped") {
		t.Errorf("dropped message: %q", evs[0].Message)
	}
}

// outboxed lists an outbox's events as TYPE:PID (a "dropped" notice
// first, as peek would send it), without peeking.
func outboxed(o *outbox) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	if o.dropped > 0 {
		out = append(out, "events_dropped")
	}
	for _, e := range o.events {
		s := e.Type
		if e.PID != 0 {
			s += ":" + strconv.Itoa(e.PID)
		}
		out = append(out, s)
	}
	return out
}

func TestValidSHA256(t *testing.T) {
	for s, want := range map[string]bool{
		strings.Repeat("ab", 32):          true,
		strings.Repeat("AB", 32):          false,
		strings.Repeat("ab", 31):          false,
		"../../etc/passwd":                false,
		strings.Repeat("ab", 31) + "/x":   false,
		strings.Repeat("ab", 32) + ".tmp": false,
	} {
		if got := validSHA256(s); got != want {
			t.Errorf("validSHA256(%q) = %v", s, got)
		}
	}
}

// TestAgentEnrolledFetchesWhatRuns: the agent downloads a desired patch
// only once a program with its target build-id runs on the host, then
// applies it.
func TestAgentEnrolledFetchesWhatRuns(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	_, data := signed(t, orig, fixed, "bounds-fix", key)
	f := newFleet(t, dir, pub)
	cfg := f.enrolledConfig(dir, h, pub, map[string]string{"ring": "canary"})
	startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "enrolled", is("enrolled", 0))
	f.rollout(t, data)
	// Then a patch for a program that runs: once the agent applied it, it
	// has made real a desired state that holds both.
	sentinel, sorig := testutil.FixturePatch(t, "null_check", builder.Options{ID: "sentinel"}, key)
	_, spid := h.start(t, sorig.Program)
	f.rollout(t, sentinel.File)
	waitEvent(t, cfg.StateDir, time.Minute, "applied to the sentinel", is("applied", spid))
	serverDir := filepath.Join(cfg.StateDir, serverDirName)
	if files, _ := filepath.Glob(filepath.Join(serverDir, "*.hpatch")); len(files) != 1 {
		t.Fatalf("the agent fetched a patch for a program that does not run: %v, want the sentinel's only", files)
	}
	p, pid := h.start(t, orig)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied once the target runs", is("applied", pid))
	if !answersFixed(t, p) {
		t.Errorf("the process does not answer as fixed")
	}
}
