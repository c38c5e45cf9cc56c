package cli

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// run calls the CLI in-process and returns its exit status and output.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = Main(args, &o, &e)
	return code, o.String(), e.String()
}

func keygen(t *testing.T) (dir, key, pub string) {
	t.Helper()
	dir = t.TempDir()
	name := filepath.Join(dir, "release")
	if code, _, stderr := run(t, "keygen", "-o", name); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, stderr)
	}
	return dir, name + ".key", name + ".pub"
}

// TestFixturesInspect runs build and inspect, as a user would, for every
// fixture of the corpus, and checks what inspect shows against the
// fixture's expectations and the builds themselves.
func TestFixturesInspect(t *testing.T) {
	names, err := fixture.Names()
	if err != nil {
		t.Fatal(err)
	}
	dir, key, pub := keygen(t)
	pubKey, err := patch.ReadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fx, err := fixture.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			orig, fixed := fixtureBuilds(t, fx)
			out := filepath.Join(dir, name+".hpatch")
			code, stdout, stderr := run(t, "build", "--original", orig.Target, "--patched", fixed.Target,
				"--key", key, "-o", out, "--id", "fx-"+name, "--cve", "CVE-2026-0001", "--cve", "CVE-2026-0002",
				"--severity", "high", "--description", fx.Spec.Description)
			exp := fx.Spec.Expect
			if exp.Result == "refuse" {
				if code != 1 {
					t.Fatalf("build: exit %d, want 1 (refusal); stdout %q", code, stdout)
				}
				if lines := strings.Count(strings.TrimSpace(stderr), "\n"); lines != 0 {
					t.Errorf("refusal is not one line: %q", stderr)
				}
				for _, s := range exp.RefuseContains {
					if !strings.Contains(stderr, s) {
						t.Errorf("refusal %q does not name %q", stderr, s)
					}
				}
				if _, err := os.Stat(out); err == nil {
					t.Errorf("a refused build left %s behind", out)
				}
				return
			}
			if code != 0 {
				t.Fatalf("build: exit %d: %s", code, stderr)
			}
			if !strings.Contains(stdout, "wrote "+out) {
				t.Errorf("build output %q does not say what it wrote", stdout)
			}

			code, stdout, stderr = run(t, "inspect", "--json", out)
			if code != 0 {
				t.Fatalf("inspect --json: exit %d: %s", code, stderr)
			}
			var s patch.Summary
			if err := json.Unmarshal([]byte(stdout), &s); err != nil {
				t.Fatalf("inspect --json output: %v\n%s", err, stdout)
			}
			checkSummary(t, fx, orig.Target, s, patch.KeyID(pubKey))

			code, text, stderr := run(t, "inspect", out)
			if code != 0 {
				t.Fatalf("inspect: exit %d: %s", code, stderr)
			}
			for _, want := range append([]string{"fx-" + name, s.Target.BuildID, "CVE-2026-0001", "CVE-2026-0002", s.SignerKeyID, filepath.Base(orig.Target)},
				append(exp.MustChange, exp.MustAdd...)...) {
				if !strings.Contains(text, want) {
					t.Errorf("inspect text does not show %q:\n%s", want, text)
				}
			}
		})
	}
}

func checkSummary(t *testing.T, fx *fixture.Fixture, target string, s patch.Summary, keyID string) {
	t.Helper()
	exp := fx.Spec.Expect
	if s.ID != "fx-"+fx.Name || s.Severity != "high" || s.Description != fx.Spec.Description {
		t.Errorf("id/severity/description = %q/%q/%q", s.ID, s.Severity, s.Description)
	}
	if !slices.Equal(s.CVEs, []string{"CVE-2026-0001", "CVE-2026-0002"}) {
		t.Errorf("cves = %v", s.CVEs)
	}
	if s.SignerKeyID != keyID {
		t.Errorf("signer %q, want %q", s.SignerKeyID, keyID)
	}
	if s.Target.Name != filepath.Base(target) || s.Target.Arch != "x86_64" {
		t.Errorf("target %+v, want name %s, arch x86_64", s.Target, filepath.Base(target))
	}
	want, err := fixture.BuildID(target)
	if err != nil {
		t.Fatal(err)
	}
	if s.Target.BuildID != hex.EncodeToString(want) {
		t.Errorf("build-id %s, want %x", s.Target.BuildID, want)
	}
	kinds := map[string]string{}
	for _, f := range s.Functions {
		kinds[f.Name] = f.Kind
		if f.Kind != patch.FuncKindNew && (f.OldSHA256 == "" || f.OldSize == 0) {
			t.Errorf("replaced function %s lacks its original size or hash: %+v", f.Name, f)
		}
	}
	for _, n := range exp.MustChange {
		if k := kinds[n]; k != patch.FuncKindReplaced && k != patch.FuncKindColdPart {
			t.Errorf("function %s: kind %q, want replaced", n, k)
		}
	}
	for _, n := range exp.MustAdd {
		if k := kinds[n]; k != patch.FuncKindNew {
			t.Errorf("function %s: kind %q, want new", n, k)
		}
	}
	for _, n := range exp.MustNotChange {
		if k, ok := kinds[n]; ok {
			t.Errorf("function %s is in the patch (%s) but did not change", n, k)
		}
	}
	for _, n := range exp.Externals {
		found := false
		for _, e := range s.ExternalSymbols {
			found = found || e == n || strings.HasPrefix(e, n+"@")
		}
		if !found {
			t.Errorf("external %s missing from %v", n, s.ExternalSymbols)
		}
	}
}

// TestErrors checks exit statuses and that every error is one line that
// names its cause.
func TestErrors(t *testing.T) {
	dir, key, _ := keygen(t)
	good := filepath.Join(dir, "good.hpatch")
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	orig, fixed := fixtureBuilds(t, fx)
	if code, _, stderr := run(t, "build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", good); code != 0 {
		t.Fatalf("build: %s", stderr)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(dir, "tampered.hpatch")
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 1
	if err := os.WriteFile(tampered, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.hpatch")
	if err := os.WriteFile(truncated, data[:len(data)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"tampered", []string{"inspect", tampered}, 1, "patch:"},
		{"truncated", []string{"inspect", truncated}, 1, "patch:"},
		{"missing file", []string{"inspect", filepath.Join(dir, "nope.hpatch")}, 1, "nope.hpatch"},
		{"inspect no args", []string{"inspect"}, 2, "arg"},
		{"build without key", []string{"build", "--original", orig.Target, "--patched", fixed.Target, "-o", filepath.Join(dir, "x.hpatch")}, 2, "--key"},
		{"build with a public key", []string{"build", "--original", orig.Target, "--patched", fixed.Target, "--key", strings.TrimSuffix(key, ".key") + ".pub", "-o", filepath.Join(dir, "x.hpatch")}, 1, "key"},
		{"build same file", []string{"build", "--original", orig.Target, "--patched", orig.Target, "--key", key, "-o", filepath.Join(dir, "x.hpatch")}, 1, "no function changed"},
		{"bad severity", []string{"build", "--original", orig.Target, "--patched", fixed.Target, "--key", key, "-o", filepath.Join(dir, "x.hpatch"), "--severity", "urgent"}, 2, "--severity"},
		{"keygen overwrite", []string{"keygen", "-o", strings.TrimSuffix(key, ".key")}, 1, "exist"},
		{"keygen no name", []string{"keygen"}, 2, "-o"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			first, _, _ := strings.Cut(stderr, "\n")
			if !strings.HasPrefix(first, "hotpatch") || !strings.Contains(first, tt.want) {
				t.Errorf("first line %q: want a 'hotpatch…' line naming %q", first, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "x.hpatch")); err == nil {
		t.Errorf("a failed build left its output file behind")
	}
}

// fixtureBuilds builds both variants of a fixture at its default flags.
func fixtureBuilds(t *testing.T, fx *fixture.Fixture) (orig, fixed *fixture.Build) {
	t.Helper()
	orig, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	fixed, err = fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	return orig, fixed
}
