package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/engine"
)

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
with a newer one stacked on the same function can be reverted too: the newer
one stays in effect and will put back what the reverted one replaced.`,
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
					r.Result, r.PausedUS, r.Functions, r.WasLost, r.KeptMapped = "reverted", res.Paused.Microseconds(), res.Functions, res.WasLost, res.KeptMapped
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
