package builder

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// names of the functions in a patch, by what the patch does with them.
func patchNames(p *patch.Patch) (replaced, added []string) {
	for _, f := range p.Functions {
		if f.Replaces() {
			replaced = append(replaced, f.Name)
		} else {
			added = append(added, f.Name)
		}
	}
	return replaced, added
}

func externals(p *patch.Patch) []string {
	var out []string
	for _, r := range p.Relocs {
		if r.Target.Kind == patch.External && !slices.Contains(out, r.Target.Symbol) {
			out = append(out, r.Target.Symbol)
		}
	}
	return out
}

// TestFixtures builds a patch from every fixture of the corpus at its
// default flags and checks the outcome the fixture states.
func TestFixtures(t *testing.T) {
	names, err := fixture.Names()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 15 {
		t.Fatalf("the corpus has %d fixtures, want at least 15", len(names))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fx, err := fixture.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			orig, fixed := buildPair(t, fx, fx.DefaultFlags())
			p, err := Build(orig.Target, fixed.Target, Options{ID: "test-" + name})
			checkOutcome(t, fx, orig.Target, fixed.Target, p, err)
		})
	}
}

func buildPair(t *testing.T, fx *fixture.Fixture, fl fixture.Flags) (orig, fixed *fixture.Build) {
	t.Helper()
	orig, err := fx.Build(fixture.Orig, fl)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err = fx.Build(fixture.Fixed, fl)
	if err != nil {
		t.Fatal(err)
	}
	return orig, fixed
}

func checkOutcome(t *testing.T, fx *fixture.Fixture, orig, fixed string, p *patch.Patch, err error) {
	t.Helper()
	exp := fx.Spec.Expect
	if exp.Result == "refuse" {
		if err == nil {
			t.Fatalf("Build succeeded, want a refusal containing %q", exp.RefuseContains)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
		for _, s := range exp.RefuseContains {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not contain %q", err, s)
			}
		}
		return
	}
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	replaced, added := patchNames(p)
	for _, n := range exp.MustChange {
		if !slices.Contains(replaced, n) {
			t.Errorf("function %s not replaced; replaced %v, new %v", n, replaced, added)
		}
	}
	for _, n := range exp.MustAdd {
		if !slices.Contains(added, n) {
			t.Errorf("function %s not carried as new; replaced %v, new %v", n, replaced, added)
		}
	}
	for _, n := range exp.MustNotChange {
		if slices.Contains(replaced, n) || slices.Contains(added, n) {
			t.Errorf("function %s is in the patch but did not change; replaced %v, new %v", n, replaced, added)
		}
	}
	ext := externals(p)
	for _, n := range exp.Externals {
		if !slices.Contains(ext, n) {
			t.Errorf("external %s not imported; externals %v", n, ext)
		}
	}
	if err := p.Validate(); err != nil {
		t.Errorf("patch does not validate: %v", err)
	}
	if err := roundTrip(orig, fixed, p); err != nil {
		t.Errorf("round trip: %v", err)
	}
}

// TestFlagMatrix builds a few fixtures at every optimisation level, PIE
// and not, with and without -g: each must give a patch that round-trips.
func TestFlagMatrix(t *testing.T) {
	subjects := []string{"bounds_check", "new_helper", "switch_table", "state_counters", "shared_lib", "format_string"}
	variants := []fixture.Flags{
		{Opt: "-O0"}, {Opt: "-O1"}, {Opt: "-O2"}, {Opt: "-O3"}, {Opt: "-Os"},
		{Opt: "-O2", NoPIE: true}, {Opt: "-O0", NoPIE: true}, {Opt: "-O3", NoPIE: true},
		{Opt: "-O2", Debug: true}, {Opt: "-O0", Debug: true},
	}
	for _, name := range subjects {
		fx, err := fixture.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range variants {
			fl := fx.DefaultFlags()
			fl.Opt, fl.NoPIE, fl.Debug = v.Opt, v.NoPIE, v.Debug
			if fx.Spec.Target == "lib" && fl.NoPIE {
				continue // a shared library is always position-independent
			}
			label := strings.TrimPrefix(v.Opt, "-")
			if v.NoPIE {
				label += "-nopie"
			}
			if v.Debug {
				label += "-g"
			}
			t.Run(name+"/"+label, func(t *testing.T) {
				t.Parallel()
				orig, fixed := buildPair(t, fx, fl)
				p, err := Build(orig.Target, fixed.Target, Options{})
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				if replaced, _ := patchNames(p); len(replaced) == 0 {
					t.Errorf("no function replaced")
				}
				wantType := patch.PIE
				switch {
				case fx.Spec.Target == "lib":
					wantType = patch.SharedObject
				case v.NoPIE:
					wantType = patch.Executable
				}
				if p.Target.Type != wantType {
					t.Errorf("target type %v, want %v", p.Target.Type, wantType)
				}
				if err := roundTrip(orig.Target, fixed.Target, p); err != nil {
					t.Errorf("round trip: %v", err)
				}
			})
		}
	}
}

// TestBadInput checks that builds outside the input contract are refused
// with a one-line error that names what to do.
func TestBadInput(t *testing.T) {
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	orig, fixed := buildPair(t, fx, fx.DefaultFlags())
	dir := t.TempDir()
	src := func(variant string) string {
		return filepath.Join(fx.Dir, variant, fx.Spec.Sources[0])
	}
	gcc := func(out string, args ...string) string {
		t.Helper()
		p := filepath.Join(dir, out)
		cmd := exec.Command("gcc", append(args, "-o", p)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, b)
		}
		return p
	}
	noRelocs := gcc("norelocs", "-O2", "-ffunction-sections", "-fdata-sections", src("orig"))
	stripped := gcc("stripped", "-O2", "-ffunction-sections", "-fdata-sections", "-s", src("orig"))
	noBuildID := gcc("nobuildid", "-O2", "-ffunction-sections", "-fdata-sections", "-Wl,--emit-relocs", "-Wl,--build-id=none", src("orig"))
	nopie := gcc("nopie", "-O2", "-fno-pie", "-no-pie", "-ffunction-sections", "-fdata-sections", "-Wl,--emit-relocs", src("fixed"))
	notELF := filepath.Join(dir, "notelf")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		orig, fixed string
		want        string
		wantErr     any
	}{
		{"missing file", filepath.Join(dir, "nope"), fixed.Target, "not an ELF file", new(*InputError)},
		{"not ELF", notELF, fixed.Target, "not an ELF file", new(*InputError)},
		{"no emit-relocs", noRelocs, fixed.Target, "-Wl,--emit-relocs", new(*InputError)},
		{"stripped", stripped, fixed.Target, "no symbol table", new(*InputError)},
		{"no build-id", noBuildID, fixed.Target, "build-id", new(*InputError)},
		{"pie vs non-pie", orig.Target, nopie, "build both the same way", new(*InputError)},
		{"same build", orig.Target, orig.Target, "no function changed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(tt.orig, tt.fixed, Options{})
			if err == nil {
				t.Fatalf("Build succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line containing %q", err, tt.want)
			}
			if tt.wantErr != nil && !errors.As(err, tt.wantErr) {
				t.Errorf("error %T is not %T", err, tt.wantErr)
			}
		})
	}
	if _, err := Build(orig.Target, orig.Target, Options{}); !errors.Is(err, ErrNoChange) {
		t.Errorf("same build: %v, want ErrNoChange", err)
	}
}

// TestDeterministic builds the same patch twice: the bytes must not differ,
// so a patch can be rebuilt and compared by anyone.
func TestDeterministic(t *testing.T) {
	fx, err := fixture.Load("shared_lib")
	if err != nil {
		t.Fatal(err)
	}
	orig, fixed := buildPair(t, fx, fx.DefaultFlags())
	key, _, err := patch.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var files [2][]byte
	for i := range files {
		p, err := Build(orig.Target, fixed.Target, Options{ID: "det"})
		if err != nil {
			t.Fatal(err)
		}
		if files[i], err = patch.Sign(p, key); err != nil {
			t.Fatal(err)
		}
	}
	if string(files[0]) != string(files[1]) {
		t.Errorf("two builds of the same patch differ")
	}
}
