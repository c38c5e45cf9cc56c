package stock

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildLib compiles testdata/lib.c into a shared library the way a
// distribution does (-O2 -g, no function sections), with extra flags, and
// returns its path.
func buildLib(t *testing.T, dir, name string, extra ...string) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc is not installed")
	}
	out := filepath.Join(dir, name)
	args := append([]string{"-O2", "-g", "-fPIC", "-shared", "-Wl,--build-id", "-o", out, "testdata/lib.c"}, extra...)
	if msg, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %v: %v\n%s", args, err, msg)
	}
	return out
}

// strip makes the installed look of a library: no symbols, no debug
// information, section headers kept.
func strip(t *testing.T, in, out string) string {
	t.Helper()
	if msg, err := exec.Command("strip", "--strip-unneeded", "-o", out, in).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v\n%s", err, msg)
	}
	return out
}

func TestCompareProvesRebuild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	installed := strip(t, buildLib(t, dir, "built.so", `-DGREETING="hello"`), filepath.Join(dir, "installed.so"))
	rebuilt := buildLib(t, dir, "rebuilt.so", `-DGREETING="hello"`, "-Wl,--emit-relocs")

	proof, err := Compare(installed, rebuilt)
	if err != nil {
		t.Fatalf("Compare: %v", err)
	}
	if proof.Segments < 2 || proof.Bytes == 0 {
		t.Errorf("proof covers %d segments, %d bytes; want every loadable segment", proof.Segments, proof.Bytes)
	}
	if len(proof.InstalledBuildID) != 20 {
		t.Errorf("installed build-id %x, want 20 bytes", proof.InstalledBuildID)
	}
	// Kept relocations change the build-id and the section numbering;
	// the proof must say what it allowed.
	joined := strings.Join(proof.Ignored, "; ")
	for _, want := range []string{"build-id", "section headers"} {
		if !strings.Contains(joined, want) {
			t.Errorf("Ignored = %q, want it to mention %q", joined, want)
		}
	}
}

func TestCompareRefusesDifferentBuilds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	installed := strip(t, buildLib(t, dir, "built.so", `-DGREETING="hello"`), filepath.Join(dir, "installed.so"))
	for _, tc := range []struct {
		name    string
		flags   []string
		section string // the section the error must name ("" = any)
	}{
		// The same length of string: only the bytes of .rodata differ.
		{"string", []string{`-DGREETING="hallo"`}, ".rodata"},
		// Other optimisation: the code differs (and likely its layout).
		{"flags", []string{`-DGREETING="hello"`, "-O1"}, ""},
		// A changed constant in the code.
		{"code", []string{`-DGREETING="hello"`, "-Dcounter=counter2", "-Dtable=table2", "-fno-inline"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rebuilt := buildLib(t, dir, tc.name+".so", append(tc.flags, "-Wl,--emit-relocs")...)
			_, err := Compare(installed, rebuilt)
			var nr *NotReproducibleError
			if !errors.As(err, &nr) {
				t.Fatalf("Compare = %v, want a *NotReproducibleError", err)
			}
			if tc.section != "" && nr.Section != tc.section {
				t.Errorf("first difference in %q (%v), want %q", nr.Section, err, tc.section)
			}
			if !strings.Contains(err.Error(), "is not the installed") {
				t.Errorf("error %q does not say the rebuild is not the installed file", err)
			}
		})
	}
}

func TestCompareRefusesNonELF(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("#!/bin/sh\necho not an ELF file\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	installed := buildLib(t, dir, "lib.so", `-DGREETING="hello"`)
	if _, err := Compare(installed, junk); err == nil || !strings.Contains(err.Error(), "not an ELF file") {
		t.Errorf("Compare(lib, junk) = %v, want 'not an ELF file'", err)
	}
	if _, err := Compare(filepath.Join(dir, "missing"), installed); err == nil {
		t.Errorf("Compare(missing, lib) succeeded")
	}
}

func TestUsrMergeAliases(t *testing.T) {
	t.Parallel()
	got := usrMergeAliases("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13")
	if len(got) != 2 || got[1] != "/lib/x86_64-linux-gnu/libz.so.1.2.13" {
		t.Errorf("usrMergeAliases(/usr/lib/…) = %q", got)
	}
	got = usrMergeAliases("/sbin/unbound")
	if len(got) != 2 || got[1] != "/usr/sbin/unbound" {
		t.Errorf("usrMergeAliases(/sbin/…) = %q", got)
	}
	if got := usrMergeAliases("/opt/x"); len(got) != 1 {
		t.Errorf("usrMergeAliases(/opt/x) = %q", got)
	}
}

// -Wl,--emit-relocs keeps sections that a plain link drops, such as an
// empty .tm_clone_table; when its alignment is larger than that of the data
// around it, the writable segment grows and the rebuild is not the
// installed file. Compare must say so rather than prove it.
func TestCompareEmptySectionAlignment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "small.c")
	if err := os.WriteFile(src, []byte("int counter = 7;\nint next(void) { return ++counter; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(name string, extra ...string) string {
		out := filepath.Join(dir, name)
		args := append([]string{"-O2", "-fPIC", "-shared", "-Wl,--build-id", "-o", out, src}, extra...)
		if msg, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, msg)
		}
		return out
	}
	installed, rebuilt := build("installed.so"), build("rebuilt.so", "-Wl,--emit-relocs")
	_, err := Compare(installed, rebuilt)
	var nr *NotReproducibleError
	if !errors.As(err, &nr) {
		t.Fatalf("Compare = %v, want a *NotReproducibleError (the writable segment differs in size)", err)
	}
}

// Executables carry an 8-aligned .note.gnu.property before the build-id;
// the build-id must still be found (Debian's /usr/sbin/unbound has both).
func TestCompareExecutableNotes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.c")
	if err := os.WriteFile(src, []byte("#include <stdio.h>\nlong n = 1;\nint main(void) { printf(\"%ld\\n\", n); return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(name string, extra ...string) string {
		out := filepath.Join(dir, name)
		args := append([]string{"-O2", "-fcf-protection", "-Wl,--build-id", "-o", out, src}, extra...)
		if msg, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, msg)
		}
		return out
	}
	installed := strip(t, build("built"), filepath.Join(dir, "installed"))
	proof, err := Compare(installed, build("rebuilt", "-Wl,--emit-relocs"))
	if err != nil {
		t.Fatalf("Compare: %v", err)
	}
	id, err := exec.Command("readelf", "-n", installed).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(id), fmt.Sprintf("%x", proof.InstalledBuildID)) || len(proof.InstalledBuildID) == 0 {
		t.Errorf("build-id %x is not the one readelf shows:\n%s", proof.InstalledBuildID, id)
	}
}

// TestCompareSaysWhy: a refusal names the likely cause it can see: a
// section whose size differs, a build date or a build path compiled in.
func TestCompareSaysWhy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, shipped, rebuilt, want string
	}{
		{"date", `-DGREETING="built Feb 11 2023 10:15:02"`, `-DGREETING="built Dec  5 2026 15:04:11"`, "build date"},
		{"path", `-DGREETING="from /build/lighttpd-Xy3/src"`, `-DGREETING="from /build/lighttpd-Qz9/src"`, "build path"},
		{"size", `-DGREETING="hello"`, `-DGREETING="hello, world, and more"`, "section .rodata is"},
	} {
		installed := strip(t, buildLib(t, dir, tc.name+"-built.so", tc.shipped), filepath.Join(dir, tc.name+"-installed.so"))
		rebuilt := buildLib(t, dir, tc.name+"-rebuilt.so", tc.rebuilt, "-Wl,--emit-relocs")
		_, err := Compare(installed, rebuilt)
		var nr *NotReproducibleError
		if !errors.As(err, &nr) {
			t.Fatalf("%s: Compare = %v, want a NotReproducibleError", tc.name, err)
		}
		if !strings.Contains(nr.Cause, tc.want) || !strings.Contains(err.Error(), nr.Cause) {
			t.Errorf("%s: cause %q (error %q), want it to say %q", tc.name, nr.Cause, err, tc.want)
		}
	}
}
