package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/eligibility"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/buildid"
	"github.com/hotpatch/hotpatch/patch"
)

// trustDir holds the keys every apply trusts, besides --trust.
const trustDir = "/etc/hotpatch/trusted"

// procResult is one process's line of apply/revert output (the JSON shape
// of the DESIGN.md contract).
type procResult struct {
	PID       int    `json:"pid"`
	Result    string `json:"result"` // applied, reverted, failed, skipped
	Error     string `json:"error,omitempty"`
	PausedUS  int64  `json:"paused_us"`
	Functions int    `json:"functions"`
	// StartupOnly: the patch applied changes only start-up code, so the
	// process is not protected until it restarts (apply only).
	StartupOnly bool `json:"startup_only,omitempty"`
}

type runReport struct {
	Patch     string       `json:"patch"`
	Processes []procResult `json:"processes"`
}

// targetFlags are the --pid / --all pair of apply, revert and status.
type targetFlags struct {
	pid int
	all bool
}

func (f *targetFlags) add(cmd *cobra.Command) {
	cmd.Flags().IntVar(&f.pid, "pid", 0, "the process to act on")
	cmd.Flags().BoolVar(&f.all, "all", false, "every process on the host that the command applies to")
}

func (f *targetFlags) check() error {
	if (f.pid == 0) == !f.all {
		return usageError{errors.New("give exactly one of --pid PID and --all")}
	}
	if f.pid < 0 {
		return usageError{fmt.Errorf("--pid %d is not a process id", f.pid)}
	}
	return nil
}

func readTrusted(paths []string) ([]patch.PublicKey, error) {
	sys, _ := filepath.Glob(filepath.Join(trustDir, "*.pub"))
	var keys []patch.PublicKey
	for _, p := range append(paths, sys...) {
		k, err := patch.ReadPublicKey(p)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, usageError{fmt.Errorf("no trusted key: give --trust KEY.pub or install one in %s", trustDir)}
	}
	return keys, nil
}

func newApply() *cobra.Command {
	var (
		tf      targetFlags
		trust   []string
		timeout time.Duration
		asJSON  bool
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "apply (--pid PID | --all) --trust NAME.pub... [--timeout 5s] [--json] [-v] FILE.hpatch",
		Short: "Apply a signed patch to running processes, without restarting them",
		Long: `Apply a signed patch to a running process (--pid) or to every process on the
host that maps the patch's target module (--all). The patch must be signed by
a key given with --trust or installed in /etc/hotpatch/trusted/.

For each process, hotpatch checks the target module's build-id and the bytes
of every function it replaces, maps the new code next to the module, waits
until no thread is inside a replaced function (up to --timeout), writes the
redirects and lets the process go on: same pid, same connections, same memory.
Anything that does not fit is refused and leaves the process as it was.
The exit status is non-zero if any process failed or none matched.

While it waits for a busy function it says so on stderr (not with --json);
-v also names each process as it starts on it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tf.check(); err != nil {
				return err
			}
			keys, err := readTrusted(trust)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			p, err := patch.Load(data)
			if err != nil {
				return err
			}
			if err := patch.Verify(p, keys); err != nil {
				return err
			}
			pids := []int{tf.pid}
			if tf.all {
				if pids, err = engine.FindProcesses(p.Target.BuildID, ""); err != nil {
					return err
				}
				if len(pids) == 0 {
					return fmt.Errorf("no process on this host maps %s with build-id %x", p.Target.Name, p.Target.BuildID)
				}
			}
			rep := runReport{Patch: p.ID}
			opts := engine.Options{Trusted: keys, Timeout: timeout, Digest: patch.FileDigest(data)}
			stderr := cmd.ErrOrStderr()
			for _, pid := range pids {
				r := procResult{PID: pid}
				if !asJSON {
					if verbose {
						fmt.Fprintf(stderr, "pid %d: applying %s (level %d, %d function(s))\n", pid, p.ID, p.Version, len(p.Functions))
					}
					opts.Waiting = func(function string, tid int) {
						fmt.Fprintf(stderr, "pid %d: %s is running in thread %d; waiting up to %v for it to return (--timeout)\n", pid, function, tid, timeout)
					}
				}
				res, err := engine.Apply(pid, p, opts)
				switch {
				case errors.Is(err, engine.ErrAlreadyApplied):
					r.Result, r.Error = "skipped", err.Error()
				case err != nil:
					r.Result, r.Error = "failed", err.Error()
				default:
					r.Result, r.PausedUS, r.Functions = "applied", res.Paused.Microseconds(), res.Functions
					r.StartupOnly = p.StartupOnly()
				}
				rep.Processes = append(rep.Processes, r)
			}
			return report(cmd, rep, asJSON, "applied")
		},
	}
	tf.add(cmd)
	cmd.Flags().StringArrayVar(&trust, "trust", nil, "public key (NAME.pub) whose patches may be applied (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for threads to leave the functions being replaced")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "say which process is being patched")
	return cmd
}

func newRevert() *cobra.Command {
	var (
		tf      targetFlags
		timeout time.Duration
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "revert (--pid PID | --all) [--json] PATCH-ID",
		Short: "Remove an applied patch, putting back the exact original bytes",
		Long: `Revert patch PATCH-ID in a process (--pid) or in every process that carries
it (--all): once no thread runs the patch's code, the original bytes of every
redirected function are put back and the patch memory is unmapped. A patch
that a newer patch was stacked on is refused: revert the newer one first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tf.check(); err != nil {
				return err
			}
			id := args[0]
			pids := []int{tf.pid}
			if tf.all {
				var err error
				if pids, err = engine.FindProcesses(nil, id); err != nil {
					return err
				}
				if len(pids) == 0 {
					return fmt.Errorf("no process on this host carries patch %s", id)
				}
			}
			rep := runReport{Patch: id}
			for _, pid := range pids {
				r := procResult{PID: pid}
				res, err := engine.Revert(pid, id, timeout)
				if err != nil {
					r.Result, r.Error = "failed", err.Error()
				} else {
					r.Result, r.PausedUS, r.Functions = "reverted", res.Paused.Microseconds(), res.Functions
				}
				rep.Processes = append(rep.Processes, r)
			}
			return report(cmd, rep, asJSON, "reverted")
		},
	}
	tf.add(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for threads to leave the patch's code")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// report prints the per-process results and turns failures into the exit
// status.
func report(cmd *cobra.Command, rep runReport, asJSON bool, verb string) error {
	out := cmd.OutOrStdout()
	failed := 0
	for _, r := range rep.Processes {
		if r.Result == "failed" {
			failed++
		}
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		for _, r := range rep.Processes {
			switch r.Result {
			case "failed", "skipped":
				fmt.Fprintf(out, "pid %d: %s: %s\n", r.PID, r.Result, r.Error)
			default:
				fmt.Fprintf(out, "pid %d: %s %s (%d function(s), paused %dµs)\n", r.PID, verb, rep.Patch, r.Functions, r.PausedUS)
				if r.StartupOnly {
					fmt.Fprintf(out, "pid %d: restart needed: %s changes only start-up code; the process is not protected until it restarts\n", r.PID, rep.Patch)
				}
			}
		}
	}
	if failed > 0 {
		if len(rep.Processes) == 1 {
			return errors.New(rep.Processes[0].Error)
		}
		return fmt.Errorf("%d of %d processes failed", failed, len(rep.Processes))
	}
	return nil
}

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
			if tf.all && !eligibility.CanReadOthers() {
				if len(all) == 0 {
					return errors.New("no patched process among this user's own processes; other users' processes cannot be read without CAP_SYS_PTRACE: run as root")
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "hotpatch status: only this user's own processes were read; run as root (CAP_SYS_PTRACE) to see every process")
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
			fmt.Fprintf(w, "pid %d: %s level %d %s since %s, %d function(s), module %s\n", s.PID, a.ID, a.Version, a.State,
				a.AppliedAt.Format(time.RFC3339), len(a.Functions), a.Module)
		}
		for _, b := range s.Baseline {
			if b.Restart {
				fmt.Fprintf(w, "pid %d: %s %s on disk since the process started: restart it to run the build on disk\n", s.PID, b.Path, b.OnDisk)
			}
		}
	}
	return nil
}
