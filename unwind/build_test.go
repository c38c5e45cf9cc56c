package unwind

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// variant is a set of compiler flags every program is built with.
type variant struct {
	name  string
	flags []string
}

var variants = []variant{
	{"O2", []string{"-O2", "-fomit-frame-pointer"}},
	{"O0", []string{"-O0"}},
	{"O3", []string{"-O3", "-fomit-frame-pointer"}},
	// The program's own code described only by .debug_frame.
	{"debug_frame", []string{"-O2", "-fomit-frame-pointer", "-g", "-fno-asynchronous-unwind-tables"}},
}

func needGCC(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc is not installed")
	}
}

// build compiles testdata/<name>.c (cached by name, flags and source).
func build(t testing.TB, name string, flags ...string) string {
	t.Helper()
	needGCC(t)
	path, err := fixture.Compile("unwind-"+name, []string{filepath.Join("testdata", name+".c")}, flags...)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// buildShlib compiles libunwlib.so and the program shlib that uses it.
func buildShlib(t testing.TB, flags []string) (exe, lib string) {
	t.Helper()
	needGCC(t)
	lib, err := fixture.Compile("libunwlib.so", []string{"testdata/unwlib.c"}, append([]string{"-shared", "-fPIC"}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	exe = build(t, "shlib", append(append([]string{}, flags...), "-Wl,--no-as-needed", lib, "-Wl,-rpath,"+filepath.Dir(lib))...)
	return exe, lib
}
