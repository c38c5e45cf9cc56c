package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/eligibility"
)

// errNotEligible is returned by check when something blocks a patch (exit
// status 1, after the report).
var errNotEligible = errors.New("cannot be hotpatched as it is (see above)")

func newCheck() *cobra.Command {
	var (
		pid    int
		host   bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "check (FILE | --pid PID | --host) [--json]",
		Short: "Say what would block a patch of a binary, a running process or this host",
		Long: `Check, without changing anything, whether a binary, a running process or
this host can be hotpatched, and if not, why and what to do.

  FILE     the build a patch would be made from (or the installed program):
           symbol table, kept relocations (-Wl,--emit-relocs), build-id,
           compiler flags recorded in DWARF, user-level context switching
           (swapcontext, goroutines), CET shadow-stack marking
  --pid    a running process: its executable as above, plus a tracer
           already attached, seccomp, shadow stacks, and whether this user
           may attach to it (capabilities, Yama ptrace_scope)
  --host   what the engine and hotpatchd use: capabilities of this user,
           ptrace_scope, /proc/PID/map_files, memfd_create, the kernel's
           process connector and /dev/kmsg

Each line is ok, warn or block. Exit status 1 when something blocks.
hotpatchd reports the host and per-process results in its inventory, and
the dashboard shows them on the host's page.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := len(args)
			if cmd.Flags().Changed("pid") {
				n++
			}
			if host {
				n++
			}
			if n != 1 {
				return usageError{errors.New("give one of FILE, --pid PID or --host")}
			}
			var (
				r   *eligibility.Report
				err error
			)
			switch {
			case host:
				r = eligibility.Host()
			case len(args) == 1:
				r, err = eligibility.Binary(args[0])
			default:
				r, err = eligibility.Process(pid)
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				writeEligibility(cmd.OutOrStdout(), r)
			}
			if !r.Eligible {
				return errNotEligible
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&pid, "pid", 0, "check a running process")
	cmd.Flags().BoolVar(&host, "host", false, "check this host (as the current user)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// writeEligibility prints one line per finding, then the fixes of what is not
// OK.
func writeEligibility(w io.Writer, r *eligibility.Report) {
	verdict := "can be hotpatched"
	if !r.Eligible {
		verdict = "CANNOT be hotpatched as it is"
	} else if len(r.Problems()) > 0 {
		verdict = "can be hotpatched, with warnings"
	}
	fmt.Fprintf(w, "%s: %s\n", r.Target, verdict)
	said := map[string]bool{}
	for _, f := range r.Findings {
		fmt.Fprintf(w, "  %-5s  %-18s %s\n", f.Status, f.Check, f.Message)
		if f.Status != eligibility.OK && f.Fix != "" {
			fix := f.Fix
			if said[fix] {
				fix = "as above"
			}
			said[f.Fix] = true
			fmt.Fprintf(w, "  %-5s  %-18s fix: %s\n", "", "", fix)
		}
	}
}
