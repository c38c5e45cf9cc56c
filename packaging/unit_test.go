package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgentUnit runs hotpatchd as packaging/hotpatchd.service would: its
// ExecStart, under the unit's capability bounding set, NoNewPrivileges and
// file-system sandbox, with the package's files where the package puts them
// (in private overlays: the machine is not changed). It must patch a
// service that runs as another user. The test follows the unit file: a
// capability removed from it, or a path the agent needs made read-only,
// makes it fail.
func TestAgentUnit(t *testing.T) {
	need(t, "setpriv", "unshare", "nsenter", "gcc", "go")
	u := readUnit(t, "hotpatchd.service")
	argv := u.execStart(t)
	if argv[0] != "/usr/bin/hotpatchd" {
		t.Fatalf("ExecStart runs %s; the package installs /usr/bin/hotpatchd", argv[0])
	}
	l := makeLedger(t)
	h := newHost(t)
	svc, pid := h.startService(t, l)

	layer := t.TempDir()
	goBuild(t, filepath.Join(layer, "usr/bin"))
	for _, name := range []string{"hotpatch", "hotpatch-server"} {
		os.Remove(filepath.Join(layer, "usr/bin", name))
	}
	etc := filepath.Join(layer, "etc/hotpatch")
	for path, data := range map[string][]byte{
		"hotpatchd.yaml":              mustRead(t, "hotpatchd.yaml"),
		"release.pub":                 l.pub,
		"patches/" + l.id + ".hpatch": l.patch,
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(etc, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(etc, path), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	overlays := map[string]string{
		"/usr/bin": filepath.Join(layer, "usr/bin"),
		"/etc":     filepath.Join(layer, "etc"),
		"/var/lib": filepath.Join(layer, "var/lib"),
	}
	// The one addition to the unit's command: stay inside the test's host.
	cmd := u.sandbox(t, overlays, append(argv, "--pid-namespace", h.ns))
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	waitPatched(t, svc, pid, l.id, 30*time.Second, func() string {
		ev, _ := os.ReadFile(filepath.Join(layer, "var/lib/hotpatchd/events.jsonl"))
		return "agent output:\n" + out.String() + "\nevents:\n" + string(ev)
	})
	// The agent could write its state (ReadWritePaths, StateDirectory) and
	// started its process-event listener (CAP_NET_ADMIN) and crash
	// watcher (CAP_SYSLOG) without complaint.
	ev := string(mustRead(t, filepath.Join(layer, "var/lib/hotpatchd/events.jsonl")))
	for _, bad := range []string{"permission denied", "operation not permitted", "read-only file system"} {
		if strings.Contains(strings.ToLower(ev+out.String()), bad) {
			t.Errorf("the agent met %q under the unit's sandbox:\n%s\n%s", bad, out.String(), ev)
		}
	}
}

// TestUnitsVerify checks both units with systemd-analyze verify, with the
// binaries they name in place (a private mount namespace over /usr/bin).
func TestUnitsVerify(t *testing.T) {
	need(t, "systemd-analyze", "unshare", "go")
	layer := t.TempDir()
	goBuild(t, filepath.Join(layer, "bin"))
	units := t.TempDir()
	for _, n := range []string{"hotpatchd.service", "hotpatch-server.service"} {
		if err := os.WriteFile(filepath.Join(units, n), mustRead(t, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := `set -e
mount --make-rprivate /
mkdir -p "$1/work"
mount -t overlay overlay -o lowerdir=/usr/bin,upperdir="$1/bin",workdir="$1/work" /usr/bin
cd "$2"
exec systemd-analyze verify --man=no ./hotpatchd.service ./hotpatch-server.service`
	out, err := exec.Command("unshare", "--mount", "sh", "-c", script, "sh", layer, units).CombinedOutput()
	// Without systemd as PID 1, verify may still complain about the
	// system's own units; only lines naming ours count.
	var ours []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "hotpatch") {
			ours = append(ours, line)
		}
	}
	if len(ours) > 0 {
		t.Errorf("systemd-analyze verify (%v):\n%s", err, strings.Join(ours, "\n"))
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
