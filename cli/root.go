package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/internal/version"
)

// usageError marks errors in how the command was called (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// NewRoot returns the command tree of hotpatch.
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "hotpatch",
		Short: "Fix security bugs in running Linux services without restarting them",
		Long: `hotpatch turns an ordinary before/after pair of builds into a small signed
patch, and applies it to running processes in memory: same pid, same
connections, same state.`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newKeygen(), newBuild(), newInspect(), newCheck(), newApply(), newRevert(), newStatus(), newExec(), newEvents(), newFleet(), newStock())
	for _, c := range root.Commands() {
		c.Args = wrapArgs(c.Args)
	}
	return root
}

func wrapArgs(a cobra.PositionalArgs) cobra.PositionalArgs {
	if a == nil {
		a = cobra.NoArgs
	}
	return func(cmd *cobra.Command, args []string) error {
		if err := a(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// Main runs hotpatch with args and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	root := NewRoot(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	var es exitStatus
	if errors.As(err, &es) {
		return es.code // the program's own (hotpatch exec)
	}
	name := "hotpatch"
	if cmd != nil && cmd != root {
		name = cmd.CommandPath()
	}
	fmt.Fprintf(stderr, "%s: %s\n", name, oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", name)
		return 2
	}
	return 1
}

// oneLine folds a multi-line message (a compiler's output, say) into one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ; ")), " ")
}
