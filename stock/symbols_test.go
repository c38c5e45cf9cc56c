package stock

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// splitDebug compiles testdata/lib.c into a shared library and splits it
// as Debian's dh_strip does: the stripped library and its debug file,
// placed in root under usr/lib/debug/.build-id/xx/yyyy.debug.
func splitDebug(t *testing.T, name string, flags []string, root string) (lib string) {
	t.Helper()
	full, err := fixture.Compile(name, []string{"testdata/lib.c"}, append([]string{"-g", "-O2", "-fPIC", "-shared", `-DGREETING="hello"`}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	id, err := fixture.BuildID(full)
	if err != nil {
		t.Fatal(err)
	}
	debug := filepath.Join(root, strings.TrimPrefix(debugDir, "/"), debugName(id))
	if err := os.MkdirAll(filepath.Dir(debug), 0o755); err != nil {
		t.Fatal(err)
	}
	lib = filepath.Join(t.TempDir(), "libsvc.so")
	for _, args := range [][]string{
		{"objcopy", "--only-keep-debug", full, debug},
		{"strip", "--remove-section=.comment", "--remove-section=.note", "--strip-unneeded", "-o", lib, full},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return lib
}

// dbgsymDeb packs root into a Debian package as a -dbgsym package is.
func dbgsymDeb(t *testing.T, root string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	control := "Package: libsvc1-dbgsym\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: hotpatch tests <tests@localhost>\nDescription: debug symbols for libsvc1\n"
	if err := os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(t.TempDir(), "libsvc1-dbgsym_1.0-1_amd64.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	return deb
}

// TestDebugSymbols: the installed binary's debug file is found where a
// -dbgsym package installs it (by build-id), or taken from a -dbgsym .deb
// as apt-get download gives it; a package for another build is refused.
func TestDebugSymbols(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb is not installed")
	}
	root := t.TempDir()
	lib := splitDebug(t, "symbols-lib", nil, root)
	id, err := fixture.BuildID(lib)
	if err != nil {
		t.Fatal(err)
	}

	installedDir := filepath.Join(root, strings.TrimPrefix(debugDir, "/"))
	got := debugFileFor(installedDir, lib)
	if got == "" {
		t.Fatalf("debugFileFor found no debug file for build-id %x under %s", id, installedDir)
	}
	if gid, err := fixture.BuildID(got); err != nil || !bytes.Equal(gid, id) {
		t.Errorf("debugFileFor gave %s with build-id %x, %v; want %x", got, gid, err, id)
	}
	if other := debugFileFor(t.TempDir(), lib); other != "" {
		t.Errorf("debugFileFor found %s in an empty directory", other)
	}

	deb := dbgsymDeb(t, root)
	fromDeb, err := debugFromDeb(context.Background(), deb, lib, t.TempDir())
	if err != nil {
		t.Fatalf("debugFromDeb: %v", err)
	}
	if gid, err := fixture.BuildID(fromDeb); err != nil || !bytes.Equal(gid, id) {
		t.Errorf("debugFromDeb gave %s with build-id %x, %v; want %x", fromDeb, gid, err, id)
	}

	otherRoot := t.TempDir()
	splitDebug(t, "symbols-lib-O1", []string{"-O1"}, otherRoot)
	_, err = debugFromDeb(context.Background(), dbgsymDeb(t, otherRoot), lib, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "another build") {
		t.Errorf("debugFromDeb with another build's package = %v, want it refused", err)
	}
}

// TestIdentifyPackageName: a package can be named instead of a file: the
// module it is named after (its executable, or the library whose SONAME
// gives the name, as Debian's policy has it), or its only one; a package
// with several is refused with their names, an unknown name clearly.
func TestIdentifyPackageName(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("dpkg-query is not installed")
	}
	ctx := context.Background()
	pkg, err := Identify(ctx, "libexpat1")
	if err != nil {
		t.Skipf("libexpat1 is not installed here: %v", err)
	}
	if !strings.Contains(filepath.Base(pkg.File), "libexpat.so.1") || pkg.Name != "libexpat1:amd64" && pkg.Name != "libexpat1" {
		t.Errorf("Identify(libexpat1) = %+v, want its libexpat.so.1", pkg)
	}
	if libc, err := Identify(ctx, "libc6"); err != nil || filepath.Base(libc.File) != "libc.so.6" {
		t.Errorf("Identify(libc6) = %+v, %v; want libc.so.6 of its many libraries (by its SONAME)", libc, err)
	}
	if _, err := Identify(ctx, "coreutils"); err == nil || !strings.Contains(err.Error(), "name the one to patch") {
		t.Errorf("Identify(coreutils) = %v, want the package's many executables named", err)
	}
	if _, err := Identify(ctx, "no-such-package-here"); err == nil || !strings.Contains(err.Error(), "neither a file nor an installed package") {
		t.Errorf("Identify of an unknown name = %v", err)
	}
}
