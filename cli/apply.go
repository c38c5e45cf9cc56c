package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/patch"
)

// trustDir holds the keys every apply trusts, besides --trust.
const trustDir = "/etc/hotpatch/trusted"

// procResult is one process's line of apply/revert output (the JSON shape
// of the command-line contract in docs/cli.md).
type procResult struct {
	PID       int    `json:"pid"`
	Result    string `json:"result"` // applied, reverted, failed, skipped
	Error     string `json:"error,omitempty"`
	PausedUS  int64  `json:"paused_us"`
	Functions int    `json:"functions"` // functions redirected (apply) or put back (revert)
	// WasLost: the process carried the patch in state lost (its redirects
	// gone: the library was unloaded or loaded again); apply cleaned it up
	// and applied it again, revert cleaned it up.
	WasLost bool `json:"was_lost,omitempty"`
	// KeptMapped: revert left the patch's code mapped until the process
	// exits (it switches user-level contexts; a coroutine may return
	// into it).
	KeptMapped bool `json:"kept_mapped,omitempty"`
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
		tf       targetFlags
		trust    []string
		timeout  time.Duration
		asJSON   bool
		contexts bool
		verbose  bool
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
			opts := engine.Options{Trusted: keys, Timeout: timeout, Digest: patch.FileDigest(data), AllowUserContexts: contexts}
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
					r.Result, r.PausedUS, r.Functions, r.WasLost = "applied", res.Paused.Microseconds(), res.Functions, res.WasLost
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
	cmd.Flags().BoolVar(&contexts, "allow-user-contexts", false, "apply to processes that switch user-level contexts (coroutines), whose suspended stacks hotpatch cannot check: you state that no replaced function can be suspended on one")
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
			switch {
			case r.Result == "failed" && len(rep.Processes) == 1:
				// Said once, on stderr, by the returned error.
			case r.Result == "failed" || r.Result == "skipped":
				fmt.Fprintf(out, "pid %d: %s: %s\n", r.PID, r.Result, r.Error)
			case r.WasLost:
				fmt.Fprintf(out, "pid %d: %s %s: %s (%d function(s) %s, paused %dµs)\n", r.PID, verb, rep.Patch, lostNote[verb], r.Functions, countVerb[verb], r.PausedUS)
			case r.KeptMapped:
				fmt.Fprintf(out, "pid %d: %s %s (%d function(s) %s, paused %dµs); its code stays mapped until the process exits, since the process switches user-level contexts and a coroutine may still return into it\n",
					r.PID, verb, rep.Patch, r.Functions, countVerb[verb], r.PausedUS)
			default:
				fmt.Fprintf(out, "pid %d: %s %s (%d function(s) %s, paused %dµs)\n", r.PID, verb, rep.Patch, r.Functions, countVerb[verb], r.PausedUS)
			}
			if r.StartupOnly {
				fmt.Fprintf(out, "pid %d: restart needed: %s changes only start-up code; the process is not protected until it restarts\n", r.PID, rep.Patch)
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

// countVerb says what the function count of a result counts (see
// "Counting functions" in docs/engine.md).
var countVerb = map[string]string{"applied": "replaced", "reverted": "put back"}

// lostNote explains a result for a patch that was lost.
var lostNote = map[string]string{
	"applied":  "it was lost (its redirects were gone: the library was unloaded or loaded again), so its stale memory was cleaned up and it is applied again",
	"reverted": "it was lost (its redirects were gone: the library was unloaded or loaded again), so only its stale memory was cleaned up",
}
