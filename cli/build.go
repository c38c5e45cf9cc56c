package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/patch"
)

func newBuild() *cobra.Command {
	var (
		orig, fixed, keyPath, out string
		opts                      builder.Options
		severity                  string
	)
	cmd := &cobra.Command{
		Use:   "build --original ORIG --patched FIXED --key NAME.key -o OUT.hpatch",
		Short: "Make a signed patch from the original and the fixed build of a program or library",
		Long: `Compare two builds of the same module and write a signed patch that turns a
process running ORIG into one running FIXED.

Both builds must come from the same compiler with the same flags, plus
  -ffunction-sections -fdata-sections -Wl,--emit-relocs
(executables, PIE or not, and shared libraries; any -O level; -g optional).
Changes that cannot be applied to a live process — a changed initial value,
size or layout of existing data, or no changed function at all — are refused
with a reason that names the object.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for flag, v := range map[string]string{"--original": orig, "--patched": fixed, "--key": keyPath, "-o": out} {
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
			p, err := builder.Build(orig, fixed, opts)
			if err != nil {
				return err
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
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d bytes): patch %s for %s, %d function(s) replaced, %d new, %d cold part(s), %d relocation(s), signed by %s\n",
				out, len(data), p.ID, p.Target.Name, replaced, added, cold, len(p.Relocs), patch.KeyID(p.Signer))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&orig, "original", "", "the build that is running now (ELF executable or shared library)")
	f.StringVar(&fixed, "patched", "", "the same source with the fix, built the same way")
	f.StringVar(&keyPath, "key", "", "private key to sign with (from hotpatch keygen)")
	f.StringVarP(&out, "output", "o", "", "patch file to write")
	f.StringVar(&opts.ID, "id", "", "patch id (default: target name and build-id)")
	f.Uint32Var(&opts.Version, "level", 1, "patch level: a newer patch for the same id has a higher level")
	f.StringArrayVar(&opts.CVEs, "cve", nil, "CVE id the patch fixes (repeatable)")
	f.StringVar(&opts.Description, "description", "", "what the patch fixes")
	f.StringVar(&severity, "severity", "", "low, medium, high or critical")
	return cmd
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
