package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/buildid"
)

func newStatus() *cobra.Command {
	var (
		tf     targetFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status (--pid PID | --all) [--json]",
		Short: "Show the patches applied to processes, read from the processes themselves",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := tf.check(); err != nil {
				return err
			}
			pids := []int{tf.pid}
			if tf.all {
				var err error
				if pids, err = engine.FindProcesses(nil, ""); err != nil {
					return err
				}
			}
			var all []procStatus
			for _, pid := range pids {
				st, err := engine.Status(pid)
				if err != nil {
					if tf.all {
						continue // exited meanwhile
					}
					return err
				}
				all = append(all, procStatus{PID: pid, Patches: st, Baseline: baseline(pid, st)})
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(all)
			}
			return writeStatus(cmd.OutOrStdout(), all)
		},
	}
	tf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

// procStatus is one process's part of "hotpatch status".
type procStatus struct {
	PID     int              `json:"pid"`
	Patches []engine.Applied `json:"patches"`
	// Baseline tells, for each patched module, whether the file on disk
	// is still the one the process runs.
	Baseline []moduleBaseline `json:"baseline,omitempty"`
}

// moduleBaseline compares a patched module as mapped with the file now on
// disk at its path: "same"; "replaced" (a new file was installed, e.g. by
// a package upgrade) or "changed" (same file, other build): the process
// still runs the old build and needs a restart to pick up the one on disk;
// "missing": the file is gone.
type moduleBaseline struct {
	Path    string `json:"path"`
	OnDisk  string `json:"on_disk"`
	Restart bool   `json:"restart_needed"`
}

// baseline compares the modules that pid's patches target with the files
// on disk.
func baseline(pid int, st []engine.Applied) []moduleBaseline {
	var c engine.BuildIDCache
	mods, err := engine.ProcessModules(pid, &c)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []moduleBaseline
	for _, a := range st {
		for _, m := range mods {
			if m.Path != a.Module || seen[m.Path] {
				continue
			}
			seen[m.Path] = true
			b := moduleBaseline{Path: m.Path, OnDisk: "same"}
			disk, err := buildid.Read(m.Path)
			switch {
			case errors.Is(err, os.ErrNotExist):
				b.OnDisk = "missing"
			case m.Deleted:
				b.OnDisk = "replaced"
			case err != nil || !bytes.Equal(disk, m.BuildID):
				b.OnDisk = "changed"
			}
			b.Restart = b.OnDisk != "same"
			out = append(out, b)
		}
	}
	return out
}

func writeStatus(w io.Writer, all []procStatus) error {
	if len(all) == 0 {
		fmt.Fprintln(w, "no patched process")
	}
	for _, s := range all {
		if len(s.Patches) == 0 {
			fmt.Fprintf(w, "pid %d: no patches\n", s.PID)
			continue
		}
		for _, a := range s.Patches {
			if a.State == engine.StateLost {
				fmt.Fprintf(w, "pid %d: %s level %d lost since it was applied at %s: its redirects are gone from %s (unloaded, or loaded again), the fix is not in effect; apply it again\n",
					s.PID, a.ID, a.Version, a.AppliedAt.Format(time.RFC3339), a.Module)
				continue
			}
			fmt.Fprintf(w, "pid %d: %s level %d %s since %s, %d function(s) replaced, module %s\n", s.PID, a.ID, a.Version, a.State,
				a.AppliedAt.Format(time.RFC3339), a.Replaced, a.Module)
			if a.StartupOnly {
				fmt.Fprintf(w, "pid %d: %s changes only start-up code: the fix is not in effect in this process; restart it (restart needed)\n", s.PID, a.ID)
			}
		}
		for _, b := range s.Baseline {
			if b.Restart {
				fmt.Fprintf(w, "pid %d: %s %s on disk since the process started: restart it to run the build on disk\n", s.PID, b.Path, b.OnDisk)
			}
		}
	}
	return nil
}
