package cli

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/eligibility"
	"github.com/hotpatch/hotpatch/patch"
)

func newBuild() *cobra.Command {
	var (
		orig, fixed, keyPath, out string
		opts                      builder.Options
		severity                  string
		stockBinary               string
		fixes                     []string
		sf                        stockFlags
	)
	cmd := &cobra.Command{
		Use:   "build --original ORIG --patched FIXED --key NAME.key -o OUT.hpatch",
		Short: "Make a signed patch from the original and the fixed build of a program or library",
		Long: `Compare two builds of the same module and write a signed patch that turns a
process running ORIG into one running FIXED.

Both builds must come from the same compiler with the same flags, plus
  -ffunction-sections -fdata-sections -Wl,--emit-relocs
(executables, PIE or not, and shared libraries; any -O level; -g optional).
Changes that cannot be applied to a live process are refused with a reason
that names the object or function: a changed initial value, size or section
of existing data; a changed layout of a type whose objects may exist (checked
with DWARF when both builds have -g); a patch that could never apply (main, a
thread's top function that never returns, an entry shorter than the 5-byte
redirect) or that redirects nothing; a fix that runs only at start-up (unless
--allow-startup-only); a new exported symbol (unless --allow-new-exports).
See docs/builder.md, "What the builder refuses and why". Functions whose
only difference is a line number (__LINE__ in an assert or a log line) or a
build stamp (__DATE__, __TIME__) are left out, and listed as such.

For a binary a distribution installed (stripped, built without those flags),
name it with --stock and give the fix as a unified diff with --fix: the
source package is fetched and rebuilt with its own flags, the rebuild is
proven identical to the installed file, the fixed source is built the same
way, and the patch names the installed file's build-id (see 'hotpatch stock
prepare'). When the rebuild is not byte-identical, the patch is retargeted
to the installed file by a per-function proof: every function of the
compile units it changes proven the same code, every reference found, type
layouts compared with the package's debug symbols (--symbols, or its
-dbgsym package installed), or, with --without-symbols, every function of
the program proven the same code.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			required := map[string]string{"--original": orig, "--patched": fixed, "--key": keyPath, "-o": out}
			if stockBinary != "" {
				if orig != "" || fixed != "" {
					return usageError{fmt.Errorf("--stock takes the place of --original and --patched")}
				}
				if len(fixes) == 0 {
					return usageError{fmt.Errorf("--stock needs the fix as --fix FILE.patch")}
				}
				required = map[string]string{"--key": keyPath, "-o": out}
			} else if len(fixes) > 0 {
				return usageError{fmt.Errorf("--fix goes with --stock")}
			}
			for flag, v := range required {
				if v == "" {
					return usageError{fmt.Errorf("%s is required", flag)}
				}
			}
			sev := patch.Severity(severity)
			switch sev {
			case patch.SeverityNone, patch.SeverityLow, patch.SeverityMedium, patch.SeverityHigh, patch.SeverityCritical:
			default:
				return usageError{fmt.Errorf("--severity must be low, medium, high or critical, not %q", severity)}
			}
			opts.Severity = sev
			key, err := patch.ReadPrivateKey(keyPath)
			if err != nil {
				return err
			}
			var report builder.Report
			opts.Report = &report
			var p *patch.Patch
			var retarget *builder.RetargetProof
			if stockBinary != "" {
				p, retarget, err = buildStock(cmd.Context(), stockBinary, fixes, &sf, opts, cmd.ErrOrStderr())
			} else {
				p, err = builder.Build(orig, fixed, opts)
			}
			if err != nil {
				return explainBuildError(err, orig, fixed)
			}
			if opts.ID == "" {
				p.ID = defaultID(p)
			}
			data, err := patch.Sign(p, key)
			if err != nil {
				return err
			}
			if err := writeFileAtomic(out, data, 0o644); err != nil {
				return err
			}
			// One function count everywhere: functions replaced by a
			// redirect at their entry (docs/engine.md, "Counting
			// functions").
			var replaced, added, cold int
			for _, f := range p.Functions {
				switch {
				case f.Redirected():
					replaced++
				case f.Replaces():
					cold++
				default:
					added++
				}
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s (%d bytes): patch %s for %s, %d function(s) replaced, %d new, %d cold part(s), %d relocation(s), signed by %s\n",
				out, len(data), p.ID, p.Target.Name, replaced, added, cold, len(p.Relocs), patch.KeyID(p.Signer))
			for _, l := range report.LeftOut {
				if l.Data {
					fmt.Fprintf(w, "left out %s: %s\n", l.Function, l.Reason)
				} else {
					fmt.Fprintf(w, "left out %s: %s (--include-line-changes carries it)\n", l.Function, l.Reason)
				}
			}
			writeBuildNotes(w, p.Summary(), retarget)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&orig, "original", "", "the build that is running now (ELF executable or shared library)")
	f.StringVar(&fixed, "patched", "", "the same source with the fix, built the same way")
	f.StringVar(&keyPath, "key", "", "private key to sign with (from hotpatch keygen)")
	f.StringVarP(&out, "output", "o", "", "patch file to write")
	f.StringVar(&opts.ID, "id", "", "patch id (default: the target's file name and a short hash of the fix, e.g. ledger-3f2a9c1e)")
	f.Uint32Var(&opts.Version, "level", 1, "patch level: a newer patch for the same id has a higher level")
	f.StringArrayVar(&opts.CVEs, "cve", nil, "CVE id the patch fixes (repeatable)")
	f.StringVar(&opts.Description, "description", "", "what the patch fixes")
	f.StringVar(&severity, "severity", "", "low, medium, high or critical")
	f.StringVar(&stockBinary, "stock", "", "an installed binary of a distribution package, or the package's name: rebuild it from its source package instead of --original/--patched")
	f.StringArrayVar(&fixes, "fix", nil, "with --stock: the fix as a unified diff against the source package, applied with patch -p1, or as a directory: the package's source tree with the fix made in it, unbuilt (repeatable)")
	sf.add(cmd)
	f.BoolVar(&opts.IncludeLineChanges, "include-line-changes", false, "also carry functions that differ only in __LINE__ numbers or __DATE__/__TIME__ stamps (left out by default)")
	f.BoolVar(&opts.AllowStartupOnly, "allow-startup-only", false, "build a fix that runs only at process start-up, marked startup-only (applied processes still need a restart) instead of refusing it")
	f.BoolVar(&opts.AllowNewExports, "allow-new-exports", false, "build a fix that adds exported symbols, carrying the new functions hidden (other modules cannot call them) instead of refusing it")
	return cmd
}

// writeBuildNotes tells what the builder could not check or what the patch
// will not do, as inspect shows it too.
func writeBuildNotes(w io.Writer, s patch.Summary, retarget *builder.RetargetProof) {
	if retarget != nil {
		writeRetargetNotes(w, retarget)
	} else if s.LayoutChecked {
		fmt.Fprintln(w, "type layouts checked with DWARF: unchanged")
	} else {
		fmt.Fprintln(w, "warning: type layouts not checked (no DWARF): build both with -g to have the builder refuse changed struct layouts")
	}
	if s.StartupOnly {
		fmt.Fprintln(w, "warning: startup-only: the patch changes only code that runs at start-up; processes it is applied to stay vulnerable until restarted (restart needed)")
	}
	if len(s.NewExports) > 0 {
		fmt.Fprintf(w, "warning: api change: new exported function(s) %s carried hidden; other modules cannot call them until the fixed build is loaded\n", strings.Join(s.NewExports, ", "))
	}
}

// writeRetargetNotes says what the per-function proof of a stock binary
// that is not byte-identical proved, in place of the build notes' layout
// line.
func writeRetargetNotes(w io.Writer, r *builder.RetargetProof) {
	fmt.Fprintf(w, "retargeted to the installed file (its rebuild is not byte-identical): %s proven the same code (%d functions), %d of %d functions of the module; %d references moved\n",
		strings.Join(r.Units, ", "), r.Functions, r.Proven, r.Total, r.Moved)
	if r.LayoutsChecked {
		fmt.Fprintf(w, "type layouts checked with DWARF: unchanged in the fix, and the installed file's (%s) the same\n", r.Symbols)
	} else {
		fmt.Fprintln(w, "warning: type layouts not compared with the installed file (no debug symbols, --without-symbols): every function of it was proven the rebuild's code instead; a type member that no code of the program touches is not seen")
	}
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so a crash never leaves a truncated patch behind.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// defaultID names a patch without --id: the target's file name and the
// first 8 hex digits of a SHA-256 over what the patch changes (the target
// build-id, each function's name and original bytes' hash, the new code),
// so the same fix of the same build gets the same id, and another fix
// another one.
func defaultID(p *patch.Patch) string {
	h := sha256.New()
	h.Write(p.Target.BuildID)
	for _, f := range p.Functions {
		fmt.Fprintf(h, "%s\x00%s\x00", f.File, f.Name)
		h.Write(f.OldSHA256[:])
		binary.Write(h, binary.LittleEndian, [2]uint64{f.NewOffset, f.NewSize})
	}
	h.Write(p.Text)
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-", r) {
			return r
		}
		return '_'
	}, p.Target.Name)
	if len(name) > 40 {
		name = name[:40]
	}
	return fmt.Sprintf("%s-%x", name, h.Sum(nil)[:4])
}

// explainBuildError names the flags when a build failed and the two builds'
// DWARF records different compiler flags (the builder itself says when the
// builds differ without DWARF: builder.BuildsDifferError).
func explainBuildError(err error, orig, fixed string) error {
	fo, okO := eligibility.CompilerFlags(orig)
	ff, okF := eligibility.CompilerFlags(fixed)
	if okO && okF && fo != ff {
		return fmt.Errorf("the two builds differ in compiler flags (original: %s; fixed: %s): build both with the same compiler and flags: %w", fo, ff, err)
	}
	return err
}
