package segcmp

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gcc builds src into dir/name with flags and returns its path.
func gcc(t *testing.T, dir, name, src string, flags ...string) string {
	t.Helper()
	c := filepath.Join(dir, strings.TrimSuffix(name, ".so")+".c")
	if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	args := append([]string{"-O2", "-g", "-o", out, c}, flags...)
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v: %s", err, b)
	}
	return out
}

const prog = `#include <stdio.h>
static const char greeting[] = "hello";
int counter = 3;
int main(void) { printf("%s %d\n", greeting, counter++); return 0; }
`

func TestCompare(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	dir := t.TempDir()
	a := gcc(t, dir, "a", prog)
	stripped := filepath.Join(dir, "a-stripped")
	if b, err := exec.Command("strip", "-o", stripped, a).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v: %s", err, b)
	}
	rebuilt := gcc(t, dir, "b", prog)
	changed := gcc(t, dir, "c", strings.Replace(prog, "hello", "howdy", 1))
	grown := gcc(t, dir, "d", strings.Replace(prog, "counter++", "counter += 7 * counter", 1))

	for _, tc := range []struct {
		name     string
		a, b     string
		same     bool
		section  string // of the first difference
		buildIDs bool   // build-ids differ
	}{
		{"itself", a, a, true, "", false},
		{"stripped", stripped, a, true, "", false},
		{"rebuilt", a, rebuilt, true, "", true}, // other source name in the debug info: other build-id
		{"changed string", a, changed, false, ".rodata", true},
		{"changed code", a, grown, false, "ELF header", true}, // e_entry moves with the code before _start
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Compare(tc.a, tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if r.Identical != tc.same || r.BuildIDDiffers != tc.buildIDs {
				t.Fatalf("%s: identical %v, build-id differs %v; want %v, %v", r, r.Identical, r.BuildIDDiffers, tc.same, tc.buildIDs)
			}
			if !tc.same && r.Section != tc.section {
				t.Errorf("%s: first difference in %q, want %q", r, r.Section, tc.section)
			}
		})
	}
}

// A shared object linked with --emit-relocs loads the same bytes; only the
// section indices of its dynamic symbols move (a section is added before
// .text), which nothing uses at run time.
func TestCompareEmitRelocsSharedObject(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	dir := t.TempDir()
	src := "int counter;\nint get(int x) { return counter += x; }\nconst char *name(void) { return \"lib\"; }\n"
	a := gcc(t, dir, "plain.so", src, "-fPIC", "-shared")
	b := gcc(t, dir, "relocs.so", src, "-fPIC", "-shared", "-Wl,--emit-relocs")
	r, err := Compare(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Identical || r.ShndxDiffers == 0 {
		t.Fatalf("%s: want identical with dynamic symbols whose section index moved", r)
	}
}

func TestCompareNotELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	os.WriteFile(p, []byte("not elf"), 0o644)
	if _, err := Compare(p, p); err == nil {
		t.Fatal("no error for a file that is not ELF")
	}
}
