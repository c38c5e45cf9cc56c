package packaging

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall runs make install into a DESTDIR with PREFIX=/usr/local,
// checks the files and that the units run the binaries where they were
// installed, then make uninstall.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs make install")
	}
	for _, p := range []string{"make", "go", "install"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("needs %s", p)
		}
	}
	dest := t.TempDir()
	mk := func(target string) {
		t.Helper()
		cmd := exec.Command("make", "--no-print-directory", target, "DESTDIR="+dest, "PREFIX=/usr/local")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	mk("install")
	for _, f := range []string{
		"usr/local/bin/hotpatch", "usr/local/bin/hotpatchd", "usr/local/bin/hotpatch-server",
		"usr/local/lib/systemd/system/hotpatchd.service", "usr/local/lib/systemd/system/hotpatch-server.service",
		"etc/hotpatch/hotpatchd.yaml", "usr/local/share/man/man1/hotpatch.1", "usr/local/share/man/man8/hotpatchd.8",
		"usr/local/share/bash-completion/completions/hotpatchd", "usr/local/share/zsh/vendor-completions/_hotpatch-server",
		"usr/local/share/fish/vendor_completions.d/hotpatch.fish",
	} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	for unit, bin := range map[string]string{"hotpatchd": "/usr/local/bin/hotpatchd", "hotpatch-server": "/usr/local/bin/hotpatch-server"} {
		u := readUnit(t, filepath.Join(dest, "usr/local/lib/systemd/system", unit+".service"))
		if got := u.execStart(t)[0]; got != bin {
			t.Errorf("%s.service runs %s, want %s", unit, got, bin)
		}
	}
	// A config the admin edited survives a second install.
	cfg := filepath.Join(dest, "etc/hotpatch/hotpatchd.yaml")
	os.WriteFile(cfg, []byte("patch_dir: /mine\n"), 0o644)
	mk("install")
	if b, _ := os.ReadFile(cfg); string(b) != "patch_dir: /mine\n" {
		t.Errorf("make install overwrote the config: %q", b)
	}
	mk("uninstall")
	var left []string
	filepath.WalkDir(filepath.Join(dest, "usr"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, strings.TrimPrefix(p, dest))
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("make uninstall left %q", left)
	}
}
