package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
)

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

// boundsCheck builds the bounds_check fixture (a store that copied any
// length into a 16-byte slot; the fix rejects long values).
func boundsCheck(t *testing.T) (orig, fixed string) {
	t.Helper()
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	o, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	f, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	return o.Program, f.Program
}

// answersFixed probes a bounds_check process: true if the fix is in.
func answersFixed(t *testing.T, p *fixture.Proc) bool {
	t.Helper()
	got, err := p.Probe("set AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	return strings.Contains(got, "rejected")
}

// TestAgentKeepsPatchesApplied: a running process is patched when the
// patch file appears, a process started later is patched within a second
// of its start, a process outside the agent's host is never touched, and
// removing the file reverts the patch everywhere.
func TestAgentKeepsPatchesApplied(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	p, data := signed(t, orig, fixed, "bounds-fix", key)
	cfg := agentConfig(dir, h, pub)

	cfg.MetricsListen = freeLoopbackAddr(t)
	before, pid1 := h.start(t, orig)
	outside := fixture.Start(t, orig) // same program, not in the host
	if err := outside.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "started", is("started", 0))
	if err := os.WriteFile(filepath.Join(cfg.PatchDir, "bounds.hpatch"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied to the running process", is("applied", pid1))
	if !answersFixed(t, before) {
		t.Errorf("the running process does not answer as fixed")
	}

	start := time.Now()
	later, pid2 := h.start(t, orig)
	e := waitEvent(t, cfg.StateDir, 30*time.Second, "applied to the new process", is("applied", pid2))
	t.Logf("new process patched %v after its start", e.Time.Sub(start))
	if !answersFixed(t, later) {
		t.Errorf("the new process does not answer as fixed")
	}
	if ids := applied(t, outside.Pid()); len(ids) != 0 || answersFixed(t, outside) {
		t.Errorf("a process outside the agent's host was patched: %v", ids)
	}

	var m string
	testutil.Eventually(t, 30*time.Second, func() bool {
		m = metricsText(cfg.MetricsListen)
		return strings.Contains(m, `hotpatchd_events_total{type="applied"} 2`) && strings.Contains(m, "hotpatchd_patches_desired 1")
	}, func() string { return "metrics counting two applies; the last read:\n" + m })

	if err := os.Remove(filepath.Join(cfg.PatchDir, "bounds.hpatch")); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "reverted", is("reverted", pid1))
	waitEvent(t, cfg.StateDir, 30*time.Second, "reverted", is("reverted", pid2))
	for _, pr := range []*fixture.Proc{before, later} {
		if answersFixed(t, pr) {
			t.Errorf("process %d still answers as fixed after the file was removed", pr.Pid())
		}
	}
	_ = p
}

// TestAgentKilled kills the agent with SIGKILL at random moments while it
// patches a burst of new processes; after a restart every process carries
// the patch exactly once and answers as fixed.
func TestAgentKilled(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	cfg, _ := withPatch(t, h, orig, fixed, "bounds-fix")
	type proc struct {
		p   *fixture.Proc
		pid int
	}
	var procs []proc
	for round := 0; round < 4; round++ {
		a := startAgent(t, cfg)
		for i := 0; i < 3; i++ {
			p, pid := h.start(t, orig)
			procs = append(procs, proc{p, pid})
		}
		time.Sleep(time.Duration(round*15) * time.Millisecond)
		a.kill9()
	}
	startAgent(t, cfg)
	for _, pr := range procs {
		waitFor(t, 30*time.Second, func() bool {
			ids := applied(t, pr.pid)
			return len(ids) == 1 && ids[0] == "bounds-fix:applied"
		}, "process %d patched once", pr.pid)
		if !answersFixed(t, pr.p) {
			t.Errorf("process %d does not answer as fixed", pr.pid)
		}
	}
	if n := countEvents(cfg.StateDir, func(e Event) bool { return e.Type == "apply_failed" && !strings.Contains(e.Error, "interrupted") }); n > 0 {
		t.Logf("%d applies failed along the way (retried)", n)
	}
}

// TestAgentWithoutProcessEvents: where the kernel gives no process events
// (here the agent runs in a network namespace of its own, which has no
// process connector; a kernel may also ignore or refuse the subscription,
// TestListenInOtherNamespaces in package procevents), the agent says so and
// finds new processes by its rescans.
func TestAgentWithoutProcessEvents(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	if err := exec.Command("unshare", "--net", "true").Run(); err != nil {
		t.Skipf("unshare --net: %v", err)
	}
	orig, fixed := boundsCheck(t)
	cfg, _ := withPatch(t, h, orig, fixed, "bounds-fix")
	startAgent(t, cfg, "unshare", "--net")
	lost := waitEvent(t, cfg.StateDir, time.Minute, "events_lost", is("events_lost", 0))
	if !strings.Contains(lost.Message, "rescans") || !strings.Contains(lost.Error, "process connector") {
		t.Errorf("events_lost says %q (%s); want the reason and the rescans named", lost.Message, lost.Error)
	}
	p, pid := h.start(t, orig)
	waitEvent(t, cfg.StateDir, time.Minute, "applied by a rescan", is("applied", pid))
	if !answersFixed(t, p) {
		t.Errorf("the process does not answer as fixed")
	}
}

// freeLoopbackAddr returns a loopback address with a port free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func metricsText(addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitFor waits until cond holds; it fails the test after timeout, with
// the message format and args say.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	testutil.Eventually(t, timeout, cond, append([]any{"timed out waiting for " + format}, args...)...)
}

// crashy builds agent/testdata/crashy: the "fix" crashes on "boom".
func crashy(t *testing.T) (orig, fixed string) {
	t.Helper()
	orig, fixed, err := fixture.CompilePair("crashy", "testdata/crashy", "crashy.c")
	if err != nil {
		t.Fatal(err)
	}
	return orig, fixed
}

// TestAgentCrashRollback: a patched process crashes in the patch's code
// within its health window; the agent records the crash (signal, fault
// address, the patched function), reverts the patch from the other
// process and keeps it off a process started afterwards.
func TestAgentCrashRollback(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed := crashy(t)
	cfg, _ := withPatch(t, h, orig, fixed, "crashy-fix")
	a, pidA := h.start(t, orig)
	b, pidB := h.start(t, orig)
	ag := startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pidA))
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pidB))
	if got, _ := b.Probe("hello"); got != "fixed hello" {
		t.Fatalf("B answered %q before the crash", got)
	}
	a.Probe("boom") // A dies of SIGSEGV inside the patched handle
	crash := waitEvent(t, cfg.StateDir, 30*time.Second, "crash", is("crash", pidA))
	t.Logf("crash event: %s", crash)
	if crash.Signal != "SIGSEGV" {
		t.Errorf("crash event %+v: want SIGSEGV", crash)
	}
	if crash.IP != "" && (crash.Function != "handle" || crash.Fault != "0x0") {
		t.Errorf("crash event %+v: want the fault at 0x0 in the patched handle", crash)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "rolled_back", is("rolled_back", 0))
	waitEvent(t, cfg.StateDir, 30*time.Second, "reverted", is("reverted", pidB))
	if got, _ := b.Probe("hello"); got != "orig hello" {
		t.Errorf("B answered %q after the rollback; want the original", got)
	}
	c, pidC := h.start(t, orig)
	lookedAt(t, h, cfg, ag)
	if ids := applied(t, pidC); len(ids) != 0 || countEvents(cfg.StateDir, is("applied", pidC)) != 0 {
		t.Errorf("a process started after the rollback was patched: %v", ids)
	}
	if got, _ := c.Probe("hello"); got != "orig hello" {
		t.Errorf("C answered %q", got)
	}
}

// lookedAt returns once the agent ag, running with cfg (made by
// agentConfig) on host h, has looked at every process started on h before
// the call and finished what it did about them: a sentinel process (the
// null_check fixture) started now gets a sentinel patch put in the patch
// directory now; once the agent applied it, the agent is stopped
// (SIGTERM: it finishes the jobs in flight). A test asserts what the agent
// did not do after it.
func lookedAt(t *testing.T, h *host, cfg Config, ag *agentProc) {
	t.Helper()
	sp, orig := testutil.FixturePatch(t, "null_check", builder.Options{ID: "sentinel"}, sentinelKey(t))
	_, pid := h.start(t, orig.Program)
	if err := os.WriteFile(filepath.Join(cfg.PatchDir, "sentinel.hpatch"), sp.File, 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cfg.StateDir, time.Minute, "applied to the sentinel", is("applied", pid))
	ag.stop()
	waitEvent(t, cfg.StateDir, time.Minute, "stopped", is("stopped", 0))
}

// sentinelKeys signs the sentinel patches of lookedAt; agentConfig trusts
// it.
var sentinelKeys = sync.OnceValues(func() (patch.PrivateKey, error) {
	key, _, err := patch.GenerateKey()
	return key, err
})

func sentinelKey(t *testing.T) patch.PrivateKey {
	t.Helper()
	key, err := sentinelKeys()
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestAgentProbeRollback: a health probe that fails after the apply makes
// the agent revert the patch and keep it off new processes.
func TestAgentProbeRollback(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	cfg, dir := withPatch(t, h, orig, fixed, "bounds-fix")
	marker := filepath.Join(dir, "unhealthy")
	runs := filepath.Join(dir, "probe-runs")
	cfg.Health.Probes = []Probe{{Patch: "bounds-fix", Command: "echo run >> " + runs + "; test ! -e " + marker + " && kill -0 $HOTPATCH_PID", Interval: Duration(100 * time.Millisecond)}}
	p, pid := h.start(t, orig)
	ag := startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pid))
	// Three runs of the probe while healthy: none failed.
	waitFor(t, time.Minute, func() bool { b, _ := os.ReadFile(runs); return bytes.Count(b, []byte("\n")) >= 3 }, "three runs of the probe")
	if _, ok := findEvent(cfg.StateDir, is("probe_failed", 0)); ok {
		t.Fatalf("the probe failed while the process was healthy")
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "probe_failed", is("probe_failed", pid))
	waitEvent(t, cfg.StateDir, 30*time.Second, "reverted", is("reverted", pid))
	if answersFixed(t, p) {
		t.Errorf("the process still answers as fixed after the rollback")
	}
	_, pid2 := h.start(t, orig)
	lookedAt(t, h, cfg, ag)
	if ids := applied(t, pid2); len(ids) != 0 || countEvents(cfg.StateDir, is("applied", pid2)) != 0 {
		t.Errorf("a process started after the rollback was patched: %v", ids)
	}
}

// TestAgentProbeURL: the same with an HTTP probe that starts answering
// 503 (a service's health endpoint on 127.0.0.1).
func TestAgentProbeURL(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	cfg, _ := withPatch(t, h, orig, fixed, "bounds-fix")
	var unhealthy atomic.Bool
	var healthy atomic.Int32 // healthy answers given
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !unhealthy.Load() {
			healthy.Add(1)
		}
		if unhealthy.Load() {
			http.Error(w, "database unreachable", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	cfg.Health.Probes = []Probe{{URL: srv.URL + "/healthz", Interval: Duration(100 * time.Millisecond)}}
	p, pid := h.start(t, orig)
	startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pid))
	// Three healthy answers: no probe failed.
	waitFor(t, time.Minute, func() bool { return healthy.Load() >= 3 }, "three runs of the probe")
	if _, ok := findEvent(cfg.StateDir, is("probe_failed", 0)); ok {
		t.Fatalf("the probe failed while the service was healthy")
	}
	unhealthy.Store(true)
	failed := waitEvent(t, cfg.StateDir, 30*time.Second, "probe_failed", is("probe_failed", pid))
	if !strings.Contains(failed.Error, "503") {
		t.Errorf("probe_failed says %q; want the HTTP status", failed.Error)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "reverted", is("reverted", pid))
	if answersFixed(t, p) {
		t.Errorf("the process still answers as fixed after the rollback")
	}
}

// TestAgentDlopen: a library loaded with dlopen after the process started
// is patched too (found by the rescan).
func TestAgentDlopen(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	fx, err := fixture.Load("shared_lib")
	if err != nil {
		t.Fatal(err)
	}
	o, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	f, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	host, err := fixture.Compile("agent-dlopen", []string{"testdata/dlopen/main.c"}, "-O2", "-ldl")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := withPatch(t, h, o.Lib, f.Lib, "svc-port")
	p, pid := h.start(t, host)
	startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "started", is("started", 0))
	if got, _ := p.Probe("load " + o.Lib); got != "loaded" {
		t.Fatalf("load: %q", got)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied after dlopen", is("applied", pid))
	if got, _ := p.Probe("listen 0"); got != "port -1" {
		t.Errorf("listen 0 answered %q; want the fixed library's 'port -1'", got)
	}
}

// TestAgentFallback: a process whose patched function never returns (main's
// own loop) gets the configured restart command instead.
func TestAgentFallback(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed, err := fixture.CompilePair("mainloop", "../engine/testdata/mainloop", "mainloop.c")
	if err != nil {
		t.Fatal(err)
	}
	cfg, dir := withPatch(t, h, orig, fixed, "mainloop-fix")
	out := filepath.Join(dir, "restarted")
	cfg.Fallback = Fallback{Command: "echo $HOTPATCH_PID $HOTPATCH_PATCH >> " + out}
	_, pid := h.start(t, orig)
	startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "busy", is("busy", pid))
	waitEvent(t, cfg.StateDir, 30*time.Second, "fallback", func(e Event) bool { return e.Type == "fallback" && e.PID == pid && strings.HasPrefix(e.Message, "ran") })
	got, err := os.ReadFile(out)
	if err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(pid)+" mainloop-fix" {
		t.Errorf("the restart command wrote %q, %v", got, err)
	}
}

// TestAgentFallbackSandboxed: a process the engine refuses to touch (its
// seccomp filter forbids the system calls an apply makes) gets the restart
// command at once, and the agent says why.
func TestAgentFallbackSandboxed(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed, err := fixture.CompilePair("sandboxed", "testdata/sandboxed", "sandboxed.c")
	if err != nil {
		t.Fatal(err)
	}
	cfg, dir := withPatch(t, h, orig, fixed, "sandboxed-fix")
	out := filepath.Join(dir, "restarted")
	cfg.Fallback = Fallback{Command: "echo $HOTPATCH_PID >> " + out}
	p, pid := h.start(t, orig)
	if got, _ := p.Probe("hello"); got != "orig hello" {
		t.Fatalf("first answer %q", got)
	}
	startAgent(t, cfg)
	failed := waitEvent(t, cfg.StateDir, 30*time.Second, "apply_failed", is("apply_failed", pid))
	if !strings.Contains(failed.Error, "seccomp") {
		t.Errorf("apply_failed says %q; want the seccomp filter named", failed.Error)
	}
	waitEvent(t, cfg.StateDir, 30*time.Second, "fallback", func(e Event) bool { return e.Type == "fallback" && e.PID == pid && strings.HasPrefix(e.Message, "ran") })
	if got, err := os.ReadFile(out); err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(pid) {
		t.Errorf("the restart command wrote %q, %v", got, err)
	}
	if got, _ := p.Probe("hello"); got != "orig hello" {
		t.Errorf("the refused process answered %q; it must be untouched", got)
	}
}

// TestAgentStops: SIGTERM while applies wait for busy functions (more
// processes than workers, so some jobs are still queued) stops the agent
// promptly and cleanly: the jobs in flight finish, the queued ones are
// dropped, "stopped" is recorded, and no process is left half patched.
// The processes' worker threads stay inside the patched function (the
// engine's "held" test program), so the applies wait out their timeout.
func TestAgentStops(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	orig, fixed, err := fixture.CompilePair("held", "../engine/testdata/held", "held.c", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := withPatch(t, h, orig, fixed, "held-fix")
	cfg.Timeout = Duration(3 * time.Second)
	var pids []int
	for i := 0; i < 6; i++ {
		p, pid := h.start(t, orig)
		pids = append(pids, pid)
		waitFor(t, time.Minute, func() bool { got, _ := p.Probe("inside"); return got == "inside 1" }, "the worker of %d inside the function", pid)
	}
	a := startAgent(t, cfg)
	// Applies in flight: patch memory mapped, waiting for the worker.
	inFlight := 0
	waitFor(t, time.Minute, func() bool {
		inFlight = 0
		for _, pid := range pids {
			if st, _ := engine.Status(pid); len(st) > 0 && st[0].State == "preparing" {
				inFlight++
			}
		}
		return inFlight >= 2
	}, "two applies in flight")
	start := time.Now()
	a.stop() // SIGTERM, then SIGKILL after 10 s: a hang shows as an unclean exit
	t.Logf("stopped in %v, %d applies were in flight", time.Since(start), inFlight)
	if a.cmd.ProcessState == nil || !a.cmd.ProcessState.Success() {
		t.Errorf("the agent did not exit cleanly: %v\n%s", a.cmd.ProcessState, a.out)
	}
	waitEvent(t, cfg.StateDir, time.Second, "stopped", is("stopped", 0))
	for _, pid := range pids {
		for _, s := range applied(t, pid) {
			if !strings.HasSuffix(s, ":applied") {
				t.Errorf("process %d left with %s", pid, s)
			}
		}
	}
}

// TestAgentNotRoot: started by another user, the agent refuses in one line.
func TestAgentNotRoot(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	// A copy of this test binary that the other user can run.
	bin := filepath.Join(dir, "agent.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestAgentHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), agentHelperEnv+`={"PatchDir":"`+dir+`","StateDir":"`+dir+`/s","Trust":["x.pub"]}`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "hotpatchd must run as root") {
		t.Errorf("as nobody: %v\n%s", err, out)
	}
}

// withPatch prepares an offline agent for host h: a key, the signed patch
// from orig to fixed already in the patch directory, the config. It
// returns the config and the test's directory.
func withPatch(t *testing.T, h *host, orig, fixed, id string) (Config, string) {
	t.Helper()
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	_, data := signed(t, orig, fixed, id, key)
	cfg := agentConfig(dir, h, pub)
	if err := os.WriteFile(filepath.Join(cfg.PatchDir, id+".hpatch"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}
