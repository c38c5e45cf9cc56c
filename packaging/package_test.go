package packaging

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDebPackage builds the .deb (make package, or HOTPATCH_DEB=FILE),
// installs it on this machine with dpkg, checks the installed files, then
// runs both units' ExecStart lines under their sandboxes as systemd would
// (systemd is not PID 1 here): the agent, configured only through the
// installed /etc/hotpatch/hotpatchd.yaml, enrolls with the server and
// patches a service the test started once a rollout reaches it. dpkg
// --purge then must leave nothing behind: files, directories, the hotpatch
// user.
//
// It changes the machine while it runs (under /usr, /etc and /var/lib), so
// it refuses to run where hotpatch is already installed, and takes a lock
// so that two runs do not overlap.
func TestDebPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and installs the .deb (minutes)")
	}
	need(t, "dpkg", "setpriv", "unshare", "nsenter", "gcc", "go", "make")
	lock, err := os.OpenFile("/run/lock/hotpatch-package-test.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "hotpatch").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Skip("the hotpatch package is installed on this machine; this test installs and purges its own")
	}
	for _, p := range []string{"/usr/bin/hotpatch", "/usr/bin/hotpatchd", "/etc/hotpatch", "/var/lib/hotpatchd", "/var/lib/hotpatch-server"} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists: this test installs and purges the package, and will not touch a machine that has hotpatch on it", p)
		}
	}
	if exec.Command("getent", "passwd", "hotpatch").Run() == nil {
		t.Skip("a user named hotpatch exists; this test's package creates and removes it")
	}

	deb := os.Getenv("HOTPATCH_DEB")
	if deb == "" {
		deb = makePackage(t)
	}
	l := makeLedger(t) // before installing: nothing below may fail half-way for want of a build

	t.Cleanup(func() { purge(t) })
	if out, err := exec.Command("dpkg", "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i %s: %v\n%s", deb, err, out)
	}
	checkInstalled(t)

	// The server accepts patches signed by a publisher key it knows
	// (/etc/hotpatch/trusted/*.pub, which its unit may read).
	write(t, "/etc/hotpatch/trusted/release.pub", l.pub, 0o644)
	// hotpatch-server, as its unit runs it; the one change: a free port
	// instead of 8443, which something else on the machine may hold.
	su := readUnit(t, "/usr/lib/systemd/system/hotpatch-server.service")
	server := startUnit(t, su, su.execStart(t), "--listen", "127.0.0.1:0", "--tick", "200ms")
	url := server.waitLine(t, regexp.MustCompile(`listening on (https://\S+)`), 30*time.Second)

	// The admin's part: the release key and the server in the agent's
	// config, as the README says.
	h := newHost(t)
	svc, pid := h.startService(t, l)
	write(t, "/etc/hotpatch/release.pub", l.pub, 0o644)
	ca := mustRead(t, "/var/lib/hotpatch-server/ca.pem")
	write(t, "/etc/hotpatch/server-ca.pem", ca, 0o644)
	env := append(os.Environ(), "HOTPATCH_SERVER="+url, "HOTPATCH_CA=/etc/hotpatch/server-ca.pem",
		"HOTPATCH_TOKEN="+strings.TrimSpace(string(mustRead(t, "/var/lib/hotpatch-server/admin.token"))))
	cli := func(args ...string) string {
		cmd := exec.Command("/usr/bin/hotpatch", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("hotpatch %s: %v\n%s\nserver:\n%s", strings.Join(args, " "), err, out, server.output())
		}
		return string(out)
	}
	// An enrollment token bound to the host's ring, for one enrollment:
	// the operator, not the device, decides its ring.
	token := strings.TrimSpace(cli("fleet", "token", "create", "--role", "enroll", "--name", "package-test", "--ring", "canary", "--uses", "1"))
	cfg := string(mustRead(t, "/etc/hotpatch/hotpatchd.yaml"))
	if !strings.Contains(cfg, "\npid_namespace: \"\"\n") {
		t.Fatalf("the installed hotpatchd.yaml has no pid_namespace line to confine the agent to the test's host:\n%s", cfg)
	}
	cfg = strings.Replace(cfg, "\npid_namespace: \"\"\n", "\npid_namespace: "+h.ns+"\n", 1) + fmt.Sprintf(`
server: %s
ca: /etc/hotpatch/server-ca.pem
enroll_token: %s
name: package-test
labels:
  ring: canary
`, url, token)
	write(t, "/etc/hotpatch/hotpatchd.yaml", []byte(cfg), 0o600)

	au := readUnit(t, "/usr/lib/systemd/system/hotpatchd.service")
	agent := startUnit(t, au, au.execStart(t))

	// Publish and roll out with the installed CLI.
	dir := t.TempDir()
	patchFile := filepath.Join(dir, l.id+".hpatch")
	write(t, patchFile, l.patch, 0o644)
	waitFor(t, 30*time.Second, "the agent to enroll", func() bool {
		return strings.Contains(cli("fleet", "devices"), "package-test")
	}, agent.output)
	cli("fleet", "publish", patchFile)
	cli("fleet", "rollout", "start", l.id, "--rings", "canary", "--soak", "0s")
	waitPatched(t, svc, pid, l.id, 60*time.Second, func() string {
		return "server:\n" + server.output() + "\nagent:\n" + agent.output()
	})
}

// makePackage runs make package and returns the .deb it made.
func makePackage(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "package")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob("../dist/hotpatch_*_amd64.deb")
	if len(debs) == 0 {
		t.Fatal("make package made no dist/hotpatch_*_amd64.deb")
	}
	if rpms, _ := filepath.Glob("../dist/hotpatch-*.x86_64.rpm"); len(rpms) == 0 {
		t.Error("make package made no dist/hotpatch-*.x86_64.rpm")
	}
	sort.Slice(debs, func(i, j int) bool { return modTime(debs[i]).After(modTime(debs[j])) })
	abs, _ := filepath.Abs(debs[0])
	return abs
}

func modTime(p string) time.Time {
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// checkInstalled checks what dpkg -i left: files, modes, owners, the
// units' paths, the user.
func checkInstalled(t *testing.T) {
	t.Helper()
	files := []struct {
		path  string
		mode  fs.FileMode
		owner string
	}{
		{"/usr/bin/hotpatch", 0o755, "root"},
		{"/usr/bin/hotpatchd", 0o755, "root"},
		{"/usr/bin/hotpatch-server", 0o755, "root"},
		{"/usr/lib/systemd/system/hotpatchd.service", 0o644, "root"},
		{"/usr/lib/systemd/system/hotpatch-server.service", 0o644, "root"},
		{"/etc/hotpatch/hotpatchd.yaml", 0o644, "root"},
		{"/etc/hotpatch/patches", fs.ModeDir | 0o755, "root"},
		{"/etc/hotpatch/trusted", fs.ModeDir | 0o755, "root"},
		{"/var/lib/hotpatchd", fs.ModeDir | 0o700, "root"},
		{"/var/lib/hotpatch-server", fs.ModeDir | 0o700, "hotpatch"},
		{"/usr/share/man/man1/hotpatch.1", 0o644, "root"},
		{"/usr/share/man/man8/hotpatchd.8", 0o644, "root"},
		{"/usr/share/man/man8/hotpatch-server.8", 0o644, "root"},
		{"/usr/share/bash-completion/completions/hotpatch", 0o644, "root"},
		{"/usr/share/zsh/vendor-completions/_hotpatch", 0o644, "root"},
		{"/usr/share/fish/vendor_completions.d/hotpatch.fish", 0o644, "root"},
	}
	for _, f := range files {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, fi.Mode(), f.mode)
		}
		out, _ := exec.Command("stat", "-c", "%U", f.path).Output()
		if got := strings.TrimSpace(string(out)); got != f.owner {
			t.Errorf("%s: owner %s, want %s", f.path, got, f.owner)
		}
	}
	if out, err := exec.Command("getent", "passwd", "hotpatch").Output(); err != nil || !strings.Contains(string(out), "nologin") {
		t.Errorf("the hotpatch system user: %q, %v", out, err)
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f", "${Conffiles}", "hotpatch").Output(); !strings.Contains(string(out), "/etc/hotpatch/hotpatchd.yaml") {
		t.Errorf("hotpatchd.yaml is not a conffile (an upgrade would overwrite the admin's edits): %q", out)
	}
	for _, bin := range []string{"/usr/bin/hotpatch", "/usr/bin/hotpatchd", "/usr/bin/hotpatch-server"} {
		if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil {
			t.Errorf("%s --version: %v: %s", bin, err, out)
		}
	}
	if _, err := exec.LookPath("man"); err == nil {
		if out, err := exec.Command("man", "-w", "hotpatchd").CombinedOutput(); err != nil || !strings.Contains(string(out), "/usr/share/man/man8/hotpatchd.8") {
			t.Errorf("man -w hotpatchd: %v: %s", err, out)
		}
	}
}

// purge removes the package and checks that nothing is left.
func purge(t *testing.T) {
	if out, err := exec.Command("dpkg", "--purge", "hotpatch").CombinedOutput(); err != nil {
		t.Errorf("dpkg --purge hotpatch: %v\n%s", err, out)
	}
	for _, p := range []string{"/usr/bin/hotpatch", "/usr/bin/hotpatchd", "/usr/bin/hotpatch-server",
		"/usr/lib/systemd/system/hotpatchd.service", "/usr/lib/systemd/system/hotpatch-server.service",
		"/etc/hotpatch", "/var/lib/hotpatchd", "/var/lib/hotpatch-server", "/usr/share/man/man1/hotpatch.1"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("left behind after purge: %s", p)
			os.RemoveAll(p)
		}
	}
	if exec.Command("getent", "passwd", "hotpatch").Run() == nil {
		t.Errorf("the hotpatch user is left behind after purge")
		exec.Command("userdel", "hotpatch").Run()
	}
	if exec.Command("getent", "group", "hotpatch").Run() == nil {
		t.Errorf("the hotpatch group is left behind after purge")
		exec.Command("groupdel", "hotpatch").Run()
	}
}

// running is a unit's command started by startUnit.
type running struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *running) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.Write(p)
}

func (r *running) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// startUnit starts argv (plus extra) under the unit's sandbox; a cleanup
// stops it with SIGTERM, as systemctl stop would.
func startUnit(t *testing.T, u *unit, argv []string, extra ...string) *running {
	t.Helper()
	r := &running{cmd: u.sandbox(t, nil, append(argv, extra...))}
	r.cmd.Stdout, r.cmd.Stderr = r, r
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			r.cmd.Process.Kill()
			<-done
		}
	})
	return r
}

// waitLine waits for a line of output matching re and returns its first
// group.
func (r *running) waitLine(t *testing.T, re *regexp.Regexp, within time.Duration) string {
	t.Helper()
	var m []string
	waitFor(t, within, "output matching "+re.String(), func() bool {
		m = re.FindStringSubmatch(r.output())
		return m != nil
	}, r.output)
	return m[1]
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool, explain func() string) {
	t.Helper()
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("no %s within %v:\n%s", what, within, explain())
}

func write(t *testing.T, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}
