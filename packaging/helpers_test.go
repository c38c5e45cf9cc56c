package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// need skips the test, saying why, unless it runs as root with the
// programs it uses.
func need(t *testing.T, programs ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it runs hotpatchd, which attaches with ptrace, and makes mount and PID namespaces")
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("needs %s (not found: %v)", p, err)
		}
	}
}

// goBuild builds the commands of ./cmd into dir.
func goBuild(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/...")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
}

// ledger is the demo's service, built twice, and a signed patch between
// the two builds.
type ledger struct {
	orig, fixed string
	patch       []byte // signed
	id          string
	pub         []byte // PEM
}

func makeLedger(t *testing.T) *ledger {
	t.Helper()
	orig, fixed, err := fixture.CompilePair("ledger", "../demo/ledger", "ledger.c")
	if err != nil {
		t.Fatal(err)
	}
	l := &ledger{orig: orig, fixed: fixed, id: "ledger-memo"}
	u, err := builder.Build(orig, fixed, builder.Options{ID: l.id})
	if err != nil {
		t.Fatal(err)
	}
	key, pub, err := patch.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if l.patch, err = patch.Sign(u, key); err != nil {
		t.Fatal(err)
	}
	if l.pub, err = patch.MarshalPublicKey(pub); err != nil {
		t.Fatal(err)
	}
	return l
}

// host is a simulated host: a PID namespace (unshare --pid --fork
// --mount-proc). The agent under test is limited to it with
// --pid-namespace, so it sees only processes this test started.
type host struct {
	init int
	ns   string
}

func newHost(t *testing.T) *host {
	t.Helper()
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

// childOf waits for the one child of pid to be a program other than pid's
// own and returns it.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	parentExe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, _ := strconv.Atoi(f[0])
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c))
			if exe != "" && exe != parentExe && !strings.HasSuffix(exe, "/setpriv") {
				return c
			}
		}
	}
	t.Fatalf("process %d has no child", pid)
	return 0
}

// startService starts the vulnerable ledger in the host as user nobody,
// from a copy only nobody may read (mode 0700), as a service of its own
// user would run: the agent needs more than CAP_SYS_PTRACE for it. It
// returns the program and its pid as seen from outside the namespace.
func (h *host) startService(t *testing.T, l *ledger) (*fixture.Proc, int) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hotpatch-service-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "svc", "ledger")
	data, err := os.ReadFile(l.orig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(bin), bin} {
		if out, err := exec.Command("chown", "nobody", p).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := fixture.StartArgs(t, []string{"nsenter", "--target", strconv.Itoa(h.init), "--pid", "--mount", "--",
		"setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", bin})
	pid := childOf(t, p.Pid())
	if r, err := p.Probe("memo this-memo-is-far-too-long-for-sixteen-bytes"); err != nil || !strings.Contains(r, "wrote") {
		t.Fatalf("the vulnerable ledger answered %q, %v", r, err)
	}
	return p, pid
}

// waitPatched waits until the patch is applied in pid and the service
// behaves like the fixed build; out explains a failure.
func waitPatched(t *testing.T, svc *fixture.Proc, pid int, id string, within time.Duration, out func() string) {
	t.Helper()
	var last string
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		st, err := engine.Status(pid)
		if err != nil {
			last = err.Error()
			continue
		}
		for _, s := range st {
			last = fmt.Sprintf("%s %s", s.ID, s.State)
			if s.ID == id && s.State == "applied" {
				r, err := svc.Probe("memo this-memo-is-far-too-long-for-sixteen-bytes")
				if err != nil || !strings.Contains(r, "refused") {
					t.Fatalf("patch applied, but the service answered %q, %v", r, err)
				}
				return
			}
		}
	}
	t.Fatalf("patch %s not applied to pid %d within %v (last status: %s)\n%s", id, pid, within, last, out())
}

// lockedBuffer collects a running command's output while the test reads
// it (bytes.Buffer alone is not safe for that).
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
