package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

const cliHelperEnv = "HOTPATCH_CLI_HELPER"

// TestCLIHelper is the child of TestPermissions: it runs hotpatch with the
// arguments in HOTPATCH_CLI_HELPER (a JSON list) and prints its exit
// status, stdout and stderr as JSON.
func TestCLIHelper(t *testing.T) {
	raw := os.Getenv(cliHelperEnv)
	if raw == "" {
		t.Skip("run by TestPermissions")
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, args...)
	out, _ := json.Marshal(map[string]any{"code": code, "stdout": stdout, "stderr": stderr})
	os.Stdout.Write(append([]byte("RESULT "), out...))
}

// asUser runs hotpatch ARGS in a child process through setpriv with the
// given options, and returns what it did.
func asUser(t *testing.T, bin string, setpriv []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	a, _ := json.Marshal(args)
	cmd := exec.Command("setpriv", append(setpriv, bin, "-test.run=^TestCLIHelper$", "-test.count=1")...)
	cmd.Env = append(os.Environ(), cliHelperEnv+"="+string(a))
	cmd.Dir = filepath.Dir(bin)
	out, err := cmd.CombinedOutput()
	_, res, ok := strings.Cut(string(out), "RESULT ")
	if !ok {
		t.Fatalf("helper %v: %v\n%s", args, err, out)
	}
	var r struct {
		Code           int
		Stdout, Stderr string
	}
	if err := json.NewDecoder(strings.NewReader(res)).Decode(&r); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	return r.Code, r.Stdout, r.Stderr
}

// TestPermissions: run without the privileges hotpatch needs, apply and
// status say "permission denied" and what is needed, once, and fail;
// never "no process maps the target" or "no patched process".
func TestPermissions(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and setpriv (util-linux) to change user and capabilities")
	}
	dir, key, pub := keygen(t)
	file, orig := buildFixturePatch(t, "bounds_check", key, dir)
	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(proc.Pid())
	// A copy of this test binary, the patch and the key that another
	// user can read.
	shared, err := os.MkdirTemp("", "hotpatch-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(shared, "cli.test")
	copyFile(t, os.Args[0], bin, 0o755)
	copyFile(t, file, filepath.Join(shared, "p.hpatch"), 0o644)
	copyFile(t, pub, filepath.Join(shared, "k.pub"), 0o644)
	file, pub = filepath.Join(shared, "p.hpatch"), filepath.Join(shared, "k.pub")

	nobody := []string{"--reuid=65534", "--regid=65534", "--clear-groups"}
	noMapFiles := []string{"--bounding-set=-checkpoint_restore,-sys_admin", "--inh-caps=-checkpoint_restore,-sys_admin"}
	for _, tc := range []struct {
		name    string
		setpriv []string
		args    []string
		want    string
	}{
		{"apply --all as a user", nobody, []string{"apply", "--all", "--trust", pub, file}, "permission denied"},
		{"status --all as a user", nobody, []string{"status", "--all"}, "permission denied"},
		{"apply --pid as a user", nobody, []string{"apply", "--pid", pid, "--trust", pub, file}, "permission denied"},
		{"apply without CAP_CHECKPOINT_RESTORE", noMapFiles, []string{"apply", "--pid", pid, "--trust", pub, file}, "permission denied (needs CAP_CHECKPOINT_RESTORE or root)"},
		{"apply --all without CAP_CHECKPOINT_RESTORE", noMapFiles, []string{"apply", "--all", "--trust", pub, file}, "permission denied (needs CAP_CHECKPOINT_RESTORE or root)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := asUser(t, bin, tc.setpriv, tc.args...)
			t.Logf("exit %d: %s%s", code, stdout, stderr)
			if code != 1 || !strings.Contains(stderr, tc.want) || strings.Contains(stderr+stdout, "no process") ||
				strings.Contains(stderr+stdout, "no patched") || strings.Contains(stderr+stdout, "does not map") {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and %q", code, stdout, stderr, tc.want)
			}
			if strings.Count(stdout+stderr, "permission denied") != 1 {
				t.Errorf("the error is not said once: stdout %q, stderr %q", stdout, stderr)
			}
		})
	}
	if got, err := proc.Probe("set AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); err != nil || strings.Contains(got, "rejected") {
		t.Errorf("process answered %q, %v; want the original", got, err)
	}
}
