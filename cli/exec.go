package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/patch"
)

// exitStatus carries the exit status of a command that ends with another
// program's (hotpatch exec); Main exits with it and prints nothing.
type exitStatus struct{ code int }

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// forwarded are the signals hotpatch exec passes on to the program, as a
// service manager sends them to its main process.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

func newExec() *cobra.Command {
	var (
		patches  []string
		trust    []string
		timeout  time.Duration
		contexts bool
	)
	cmd := &cobra.Command{
		Use:   "exec --patch FILE.hpatch... --trust NAME.pub... [--timeout 5s] -- PROGRAM [ARGS...]",
		Short: "Start a program with patches applied before any of its own code runs",
		Long: `Start PROGRAM and apply each --patch whose target module it maps once the
dynamic linker has loaded its libraries and before any of its own code runs
(its constructors, main): a function it is busy in from its first instant is
patched too. Then it runs, with the signals hotpatch receives passed on to it
(SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2), and hotpatch exits with
its exit status. A patch for another program is skipped; one that fails is
reported on stderr and the program runs without it. For a service unit:
ExecStart=hotpatch exec --patch FIX.hpatch --trust KEY.pub -- /usr/sbin/daemon`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(patches) == 0 {
				return usageError{errors.New("give at least one --patch FILE.hpatch")}
			}
			keys, err := readTrusted(trust)
			if err != nil {
				return err
			}
			var ps []*patch.Patch
			for _, f := range patches {
				data, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				p, err := patch.Load(data)
				if err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				if err := patch.Verify(p, keys); err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				ps = append(ps, p)
			}
			// The program's stderr and ours are one: a writer that is not
			// a file is shared through a lock (a copy into a buffer
			// would otherwise drop what is written beside it).
			stderr := cmd.ErrOrStderr()
			if _, ok := stderr.(*os.File); !ok {
				stderr = &lockedWriter{w: stderr}
			}
			prog := exec.Command(args[0], args[1:]...)
			prog.Stdin, prog.Stdout, prog.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), stderr
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, forwarded...)
			defer signal.Stop(sigs)
			res, err := engine.Start(prog, ps, engine.Options{Trusted: keys, Timeout: timeout, AllowUserContexts: contexts})
			if prog.Process == nil {
				return err
			}
			if err != nil {
				fmt.Fprintf(stderr, "hotpatch exec: %v; %s runs without its patches\n", err, args[0])
			}
			for _, r := range res {
				var mm *engine.BuildIDMismatchError
				switch {
				case r.Err == nil:
					fmt.Fprintf(stderr, "hotpatch exec: applied %s to pid %d before its code ran (%d function(s) replaced)\n", r.Patch.ID, prog.Process.Pid, r.Result.Functions)
				case errors.As(r.Err, &mm) && mm.Got == nil:
					fmt.Fprintf(stderr, "hotpatch exec: skipped %s: %s does not map %s\n", r.Patch.ID, args[0], r.Patch.Target.Name)
				default:
					fmt.Fprintf(stderr, "hotpatch exec: %s not applied: %v\n", r.Patch.ID, r.Err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- prog.Wait() }()
			for {
				select {
				case s := <-sigs:
					prog.Process.Signal(s)
				case err := <-done:
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
							return exitStatus{128 + int(ws.Signal())}
						}
						return exitStatus{ee.ExitCode()}
					}
					if err != nil {
						return err
					}
					return nil
				}
			}
		},
	}
	cmd.Flags().SetInterspersed(false) // PROGRAM's own flags are its own
	cmd.Flags().StringArrayVar(&patches, "patch", nil, "patch file to apply (repeatable)")
	cmd.Flags().StringArrayVar(&trust, "trust", nil, "public key (NAME.pub) whose patches may be applied (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for a patch to apply")
	cmd.Flags().BoolVar(&contexts, "allow-user-contexts", false, "apply to a program that switches user-level contexts (coroutines); see apply --help")
	return cmd
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
