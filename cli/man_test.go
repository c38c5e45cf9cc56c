package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallFiles generates the man pages and completions a package
// installs, checks that they describe every command, and that groff reads
// the pages without a warning.
func TestInstallFiles(t *testing.T) {
	dir := t.TempDir()
	if err := WriteInstallFiles(dir); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"man/man1/hotpatch.1":           {".TH HOTPATCH 1", ".SS hotpatch check", ".SS hotpatch fleet rollout start", `.B \-\-pid INT`},
		"man/man8/hotpatchd.8":          {".TH HOTPATCHD 8", `.B \-\-config STRING`},
		"man/man8/hotpatch-server.8":    {".TH HOTPATCH\\-SERVER 8", `\-\-listen STRING`},
		"completion/bash/hotpatch":      {"__start_hotpatch"},
		"completion/zsh/_hotpatchd":     {"#compdef hotpatchd"},
		"completion/fish/hotpatch.fish": {"complete -c hotpatch"},
	}
	for path, needles := range want {
		b, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil {
			t.Error(err)
			continue
		}
		for _, n := range needles {
			if !strings.Contains(string(b), n) {
				t.Errorf("%s lacks %q", path, n)
			}
		}
	}
	if _, err := exec.LookPath("groff"); err != nil {
		t.Log("groff not installed: the pages' syntax is not checked")
		return
	}
	for _, p := range []string{"man/man1/hotpatch.1", "man/man8/hotpatchd.8", "man/man8/hotpatch-server.8"} {
		out, err := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", filepath.Join(dir, p)).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("groff %s: %v\n%s", p, err, out)
		}
	}
}
