package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
)

// host is a simulated host: a PID namespace the test made (unshare --pid
// --fork --mount-proc). The agent under test is limited to it, so it only
// sees processes the test started.
type host struct {
	init int    // the namespace's first process, as this test sees it
	ns   string // /proc/INIT/ns/pid
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the agent runs as root")
	}
}

func newHost(t *testing.T) *host {
	t.Helper()
	needRoot(t)
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "sleep", "infinity")
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	h := &host{}
	t.Cleanup(func() {
		if h.init != 0 {
			syscall.Kill(h.init, syscall.SIGKILL) // ends every process of the namespace
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	h.init = childOf(t, cmd.Process.Pid)
	h.ns = fmt.Sprintf("/proc/%d/ns/pid", h.init)
	return h
}

// childOf waits for the one child of pid and returns it.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	child := 0
	testutil.Eventually(t, time.Minute, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, _ := strconv.Atoi(f[0])
			// Wait for the child to be the program, not nsenter's fork.
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c))
			parentExe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if exe != "" && exe != parentExe {
				child = c
			}
		}
		return child != 0
	}, "process %d has no child", pid)
	return child
}

// start runs a program inside the host; it returns the program and its
// pid (as the agent sees it).
func (h *host) start(t *testing.T, args ...string) (*fixture.Proc, int) {
	t.Helper()
	p := fixture.StartArgs(t, append([]string{"nsenter", "--target", strconv.Itoa(h.init), "--pid", "--mount", "--"}, args...))
	pid := childOf(t, p.Pid())
	// Killing nsenter (the fixture's cleanup) does not end the program,
	// which holds nsenter's output open: the cleanup would wait for it.
	// Kill the program first (cleanups run last in, first out), through a
	// pidfd, which cannot hit a reused pid.
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		t.Cleanup(func() {
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			unix.Close(fd)
		})
	}
	return p, pid
}

// signed builds and signs the patch between two builds; it returns the
// patch and the file's bytes.
func signed(t *testing.T, orig, fixed, id string, key patch.PrivateKey) (*patch.Patch, []byte) {
	t.Helper()
	// AllowNeverApplies: the agent must cope with patches the engine refuses
	// (TestAgentFallback patches main's loop on purpose).
	sp := testutil.SignedPatch(t, orig, fixed, builder.Options{ID: id, AllowNeverApplies: true}, key)
	return sp.Patch, sp.File
}

// testKey makes a signing key and writes its public half to dir/k.pub.
func testKey(t *testing.T, dir string) (patch.PrivateKey, string) {
	t.Helper()
	key, pub, err := patch.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pem, err := patch.MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "k.pub")
	if err := os.WriteFile(path, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return key, path
}

// agentProc is hotpatchd running in a child process (this test binary,
// re-executed), so that a test can kill it with SIGKILL.
type agentProc struct {
	cmd *exec.Cmd
	out *bytes.Buffer
	cfg Config
}

const agentHelperEnv = "HOTPATCH_AGENT_HELPER"

// TestAgentHelper is the child: the agent with the config in the
// environment.
func TestAgentHelper(t *testing.T) {
	raw := os.Getenv(agentHelperEnv)
	if raw == "" {
		t.Skip("run by the agent tests")
	}
	var cfg Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	a, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hotpatchd:", err)
		os.Exit(1)
	}
	ctx, stop := signalContext()
	defer stop()
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hotpatchd:", err)
		os.Exit(1)
	}
}

// startAgent starts the agent with cfg; with wrap, through that command
// (say "unshare", "--net"), which must exec the agent.
func startAgent(t *testing.T, cfg Config, wrap ...string) *agentProc {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, wrap...), os.Args[0], "-test.run=^TestAgentHelper$", "-test.count=1")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), agentHelperEnv+"="+string(raw))
	a := &agentProc{cmd: cmd, out: &bytes.Buffer{}, cfg: cfg}
	cmd.Stdout, cmd.Stderr = a.out, a.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("agent output:\n%s", a.out.String())
		}
	})
	return a
}

// stop ends the agent with SIGTERM (a clean stop).
func (a *agentProc) stop() {
	if a.cmd.ProcessState != nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		<-done
	}
}

// kill9 kills the agent with SIGKILL.
func (a *agentProc) kill9() {
	a.cmd.Process.Kill()
	a.cmd.Wait()
}

// waitEvent waits for an event of the agent that matches, reading its
// event log; it fails the test after timeout.
func waitEvent(t *testing.T, stateDir string, timeout time.Duration, what string, match func(Event) bool) Event {
	t.Helper()
	var found Event
	testutil.Eventually(t, timeout, func() bool {
		var ok bool
		found, ok = findEvent(stateDir, match)
		return ok
	}, func() string {
		var all []string
		ReadEvents(context.Background(), stateDir, false, func(e Event) error { all = append(all, e.String()); return nil })
		return fmt.Sprintf("no %s event; events:\n%s\n", what, strings.Join(all, "\n"))
	})
	return found
}

func findEvent(stateDir string, match func(Event) bool) (Event, bool) {
	var found Event
	ok := false
	ReadEvents(context.Background(), stateDir, false, func(e Event) error {
		if !ok && match(e) {
			found, ok = e, true
		}
		return nil
	})
	return found, ok
}

func countEvents(stateDir string, match func(Event) bool) int {
	n := 0
	ReadEvents(context.Background(), stateDir, false, func(e Event) error {
		if match(e) {
			n++
		}
		return nil
	})
	return n
}

func is(typ string, pid int) func(Event) bool {
	return func(e Event) bool { return e.Type == typ && (pid == 0 || e.PID == pid) }
}

// applied returns the ids of the patches applied in pid.
func applied(t *testing.T, pid int) []string {
	t.Helper()
	st, err := engine.Status(pid)
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	var ids []string
	for _, s := range st {
		ids = append(ids, s.ID+":"+s.State)
	}
	return ids
}

// agentConfig is a config for a test: patch and state directories in
// dir, the host's namespace, quick rescans.
func agentConfig(dir string, h *host, pub string) Config {
	os.MkdirAll(filepath.Join(dir, "patches"), 0o755)
	// The key of lookedAt's sentinel patches is trusted too.
	trust := []string{pub}
	if key, err := sentinelKeys(); err == nil {
		if pem, err := patch.MarshalPublicKey(key.Public()); err == nil && os.WriteFile(filepath.Join(dir, "sentinel.pub"), pem, 0o644) == nil {
			trust = append(trust, filepath.Join(dir, "sentinel.pub"))
		}
	}
	return Config{
		PatchDir: filepath.Join(dir, "patches"), StateDir: filepath.Join(dir, "state"),
		Trust: trust, PIDNamespace: h.ns,
		Rescan: Duration(300 * time.Millisecond), Retry: Duration(200 * time.Millisecond),
		Timeout: Duration(2 * time.Second), Quiet: true,
	}
}
