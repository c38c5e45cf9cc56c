package builder

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// The retarget tests build a program the way a distribution ships it and
// the way a rebuild of its source comes out when the build machine differs
// (features.c compiled with one more feature): the installed binary is
// stripped, its symbols in a separate debug file made as Debian's dh_strip
// makes a -dbgsym package. The rebuild is not byte-identical, so the patch
// built from it is retargeted by the per-function proof.

var retargetFlags = []string{"-O2", "-g", "-fPIE", "-pie"}

// libraryFlags build the service as a shared library, libsvc.so, that
// driver.c runs: the library's globals are then reached through its GOT.
var libraryFlags = []string{"-O2", "-g", "-fPIC", "-shared", "-DAS_LIBRARY", "-Wl,-soname,libsvc.so"}

var retargetSources = []string{"testdata/retarget/features.c", "testdata/retarget/orig/svc.c"}

// shipped is an installed build: the stripped module, its debug file, and
// the command that runs it.
type shipped struct {
	module, debug string
	args          []string
}

// installedBuild compiles the shipped program with the extra flags (the
// build machine's differences) and splits it like dh_strip: the debug file
// (objcopy --only-keep-debug) and the stripped binary.
func installedBuild(t *testing.T, name string, extra ...string) (bin, debug string) {
	s := installedAs(t, name, retargetFlags, "svc", extra...)
	return s.module, s.debug
}

// installedAs compiles the shipped module with base and extra flags and
// splits it like dh_strip into dir/file and dir/file.debug; a library gets
// the driver that runs it.
func installedAs(t *testing.T, name string, base []string, file string, extra ...string) shipped {
	t.Helper()
	flags := append(append([]string{}, base...), extra...)
	full, err := fixture.Compile(name, retargetSources, flags...)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := shipped{module: filepath.Join(dir, file), debug: filepath.Join(dir, file+".debug")}
	cmds := [][]string{
		{"objcopy", "--only-keep-debug", "--compress-debug-sections", full, s.debug},
		{"strip", "--remove-section=.comment", "--remove-section=.note", "--strip-unneeded", "-o", s.module, full},
		{"objcopy", "--add-gnu-debuglink=" + s.debug, s.module},
	}
	s.args = []string{s.module}
	if strings.HasSuffix(file, ".so") {
		driver := filepath.Join(dir, "driver")
		cmds = append(cmds, []string{"gcc", "-O2", "-o", driver, "testdata/retarget/driver.c", s.module, "-Wl,-rpath," + dir})
		s.args = []string{driver}
	}
	for _, args := range cmds {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return s
}

// rebuiltPair compiles the rebuild of the original and of the fixed source
// with relocations kept (what hotpatch stock does), without WITH_ZSTD.
func rebuiltPair(t *testing.T) (orig, fixed string) {
	return rebuiltPairAs(t, "retarget", retargetFlags)
}

func rebuiltPairAs(t *testing.T, name string, base []string) (orig, fixed string) {
	t.Helper()
	flags := append(append([]string{}, base...), "-Wl,--emit-relocs")
	orig, err := fixture.Compile(name+"-orig", retargetSources, flags...)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err = fixture.Compile(name+"-fixed", []string{"testdata/retarget/features.c", "testdata/retarget/fixed/svc.c"}, flags...)
	if err != nil {
		t.Fatal(err)
	}
	return orig, fixed
}

// TestRetargetLive: the patch built from the rebuild, retargeted to the
// stripped installed module (with its debug file, and by its code alone:
// only data differs), applied to the running installed program: the fix
// takes effect, the program's state (its counters) carries on, and revert
// restores the old behaviour. Without retargeting the patch does not even
// name the installed build. As a PIE and as a shared library (whose
// globals are reached through its GOT).
func TestRetargetLive(t *testing.T) {
	t.Parallel()
	for _, kind := range []struct {
		name string
		base []string
		file string
	}{
		{"pie", retargetFlags, "svc"},
		{"library", libraryFlags, "libsvc.so"},
	} {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			installed := installedAs(t, "retarget-installed-"+kind.name, kind.base, kind.file, "-DWITH_ZSTD")
			orig, fixed := rebuiltPairAs(t, "retarget-"+kind.name, kind.base)
			if _, err := exec.Command("cmp", "-s", installed.module, orig).CombinedOutput(); err == nil {
				t.Fatal("the installed module and the rebuild are the same file; the test needs them to differ")
			}
			unsigned, err := Build(orig, fixed, Options{ID: "retarget"})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			for _, syms := range []string{installed.debug, ""} {
				name := "symbols"
				if syms == "" {
					name = "code-alone"
				}
				t.Run(name, func(t *testing.T) {
					retargetLive(t, unsigned, orig, fixed, installed, syms)
				})
			}
			t.Run("unretargeted", func(t *testing.T) {
				p, pub := signLoad(t, unsigned)
				proc := fixture.StartArgs(t, installed.args)
				if _, err := engine.Apply(proc.Pid(), p, engine.Options{Trusted: []patch.PublicKey{pub}}); err == nil {
					t.Fatal("the rebuild's own patch applied to the installed module")
				}
				if got, err := proc.Probe("-4"); err != nil || got != "1 ok -12 f3 r0" {
					t.Errorf("after the refusal: -4 -> %q, %v; want the program unchanged", got, err)
				}
			})
		})
	}
}

func retargetLive(t *testing.T, unsigned *patch.Patch, orig, fixed string, installed shipped, syms string) {
	moved, proof, err := Retarget(unsigned, orig, fixed, installed.module, RetargetOptions{Symbols: syms, CodeAlone: syms == ""})
	if err != nil {
		t.Fatalf("Retarget: %v", err)
	}
	t.Logf("proof: %+v", proof)
	if len(proof.Units) != 1 || !strings.HasSuffix(proof.Units[0], "svc.c") || proof.Functions < 4 {
		t.Errorf("proof %+v: want svc.c's functions proven", proof)
	}
	if syms != "" && !proof.LayoutsChecked || syms == "" && !proof.AllCode {
		t.Errorf("proof %+v: want layouts checked with symbols, all code proven without", proof)
	}
	if got, want := moved.Flags&patch.FlagLayoutChecked != 0, syms != ""; got != want {
		t.Errorf("the retargeted manifest says layouts checked = %v, want %v", got, want)
	}
	if proof.Moved == 0 {
		t.Errorf("proof %+v: no reference moved, but features.c moved everything after it", proof)
	}
	var old uint64
	for _, f := range unsigned.Functions {
		if f.Name == "check" {
			old = f.OldAddr
		}
	}
	for _, f := range moved.Functions {
		if f.Name == "check" && f.OldAddr == old {
			t.Errorf("check is at %#x in both builds; features.c should have moved it", old)
		}
	}
	p, pub := signLoad(t, moved)
	proc := fixture.StartArgs(t, installed.args)
	for _, ex := range []struct{ in, want string }{{"5", "1 ok 15 f3 r0"}, {"-4", "2 ok -12 f3 r0"}, {"2000", "3 refused r1"}} {
		if got, err := proc.Probe(ex.in); err != nil || got != ex.want {
			t.Fatalf("before: %q -> %q, %v; want %q", ex.in, got, err, ex.want)
		}
	}
	opts := engine.Options{Trusted: []patch.PublicKey{pub}}
	if _, err := engine.Apply(proc.Pid(), p, opts); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for _, ex := range []struct{ in, want string }{{"-4", "4 refused r2"}, {"7", "5 ok 21 f3 r2"}, {"3000", "6 refused r3"}} {
		if got, err := proc.Probe(ex.in); err != nil || got != ex.want {
			t.Errorf("after: %q -> %q, %v; want %q", ex.in, got, err, ex.want)
		}
	}
	if _, err := engine.Revert(proc.Pid(), p.ID, 5*time.Second); err != nil {
		t.Fatalf("Revert: %v", err)
	}
	if got, err := proc.Probe("-1"); err != nil || got != "7 ok -3 f3 r3" {
		t.Errorf("after revert: -1 -> %q, %v; want the old behaviour", got, err)
	}
}

// TestRetargetRefuses: what the per-function proof must refuse, each with
// the reason named.
func TestRetargetRefuses(t *testing.T) {
	t.Parallel()
	orig, fixed := rebuiltPair(t)
	unsigned, err := Build(orig, fixed, Options{ID: "retarget"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Run("other-code", func(t *testing.T) {
		t.Parallel()
		// The installed svc.c was compiled differently (another -O level,
		// as an older compiler would): its code is not the rebuild's.
		installed, debug := installedBuild(t, "retarget-installed-O1", "-DWITH_ZSTD", "-O1")
		for _, syms := range []string{debug, ""} {
			_, _, err := Retarget(unsigned, orig, fixed, installed, RetargetOptions{Symbols: syms, CodeAlone: true})
			var nse *NotSameCodeError
			if !errors.As(err, &nse) || !strings.HasSuffix(nse.Unit, "svc.c") {
				t.Errorf("symbols %q: Retarget = %v, want a NotSameCodeError in svc.c", syms, err)
			}
		}
	})
	t.Run("code-elsewhere", func(t *testing.T) {
		t.Parallel()
		// features.c's code differs too. With the debug file the layouts
		// are compared and svc.c's proof is enough; by code alone, every
		// function must be the rebuild's, and feature_count is not.
		installed, debug := installedBuild(t, "retarget-installed-levels", "-DWITH_ZSTD", "-DCOUNT_LEVELS")
		if _, proof, err := Retarget(unsigned, orig, fixed, installed, RetargetOptions{Symbols: debug}); err != nil || !proof.LayoutsChecked {
			t.Errorf("with the debug file: Retarget = %+v, %v; want it proven with layouts checked", proof, err)
		}
		_, _, err := Retarget(unsigned, orig, fixed, installed, RetargetOptions{CodeAlone: true})
		var nse *NotSameCodeError
		if !errors.As(err, &nse) || !strings.Contains(nse.What, "feature_count") {
			t.Errorf("by code alone: Retarget = %v, want feature_count named", err)
		}
	})
	t.Run("layout", func(t *testing.T) {
		t.Parallel()
		// struct stats has one more member in the shipped build, before
		// the one the fix starts to count: the old code is the same, the
		// installed binary's DWARF shows the difference.
		installed, debug := installedBuild(t, "retarget-installed-stats", "-DWITH_ZSTD", "-DSTATS_COMPRESSED")
		_, _, err := Retarget(unsigned, orig, fixed, installed, RetargetOptions{Symbols: debug})
		var le *LayoutError
		if !errors.As(err, &le) || le.Type != "struct stats" {
			t.Errorf("Retarget = %v, want struct stats' layout refused", err)
		}
	})
	t.Run("symbols-needed", func(t *testing.T) {
		t.Parallel()
		installed, _ := installedBuild(t, "retarget-installed", "-DWITH_ZSTD")
		_, _, err := Retarget(unsigned, orig, fixed, installed, RetargetOptions{})
		var sn *SymbolsNeededError
		if !errors.As(err, &sn) {
			t.Errorf("Retarget without symbols or CodeAlone = %v, want a SymbolsNeededError", err)
		}
	})
	t.Run("foreign-symbols", func(t *testing.T) {
		t.Parallel()
		installed, _ := installedBuild(t, "retarget-installed", "-DWITH_ZSTD")
		_, otherDebug := installedBuild(t, "retarget-installed-O1", "-DWITH_ZSTD", "-O1")
		_, _, err := Retarget(unsigned, orig, fixed, installed, RetargetOptions{Symbols: otherDebug})
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "symbols of another build") {
			t.Errorf("Retarget with another build's debug file = %v, want it refused", err)
		}
	})
	t.Run("no-build-id", func(t *testing.T) {
		t.Parallel()
		installed, _ := installedBuild(t, "retarget-installed-noid", "-DWITH_ZSTD", "-Wl,--build-id=none")
		_, _, err := Retarget(unsigned, orig, fixed, installed, RetargetOptions{CodeAlone: true})
		var ie *InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "no GNU build-id") {
			t.Errorf("Retarget to a binary without a build-id = %v, want it refused", err)
		}
	})
	t.Run("wrong-rebuild", func(t *testing.T) {
		t.Parallel()
		installed, _ := installedBuild(t, "retarget-installed", "-DWITH_ZSTD")
		_, _, err := Retarget(unsigned, fixed, fixed, installed, RetargetOptions{CodeAlone: true})
		if err == nil || !strings.Contains(err.Error(), "build-id") {
			t.Errorf("Retarget from a file the patch was not built from = %v, want it refused", err)
		}
	})
}
