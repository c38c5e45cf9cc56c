package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/agent"
	"github.com/hotpatch/hotpatch/internal/version"
)

// NewAgentRoot returns the command of hotpatchd, the on-host agent.
func NewAgentRoot(stdout, stderr io.Writer) *cobra.Command {
	var (
		configPath string
		flags      agent.Config
		timeout    time.Duration
		rescan     time.Duration
		window     time.Duration
		labels     []string
	)
	cmd := &cobra.Command{
		Use:   "hotpatchd [--config FILE] [--patch-dir DIR] [--state DIR] [--trust KEY.pub]… [--server URL --ca CA.pem --enroll-token-file FILE]",
		Short: "Keep the patches of a directory applied to every matching process",
		Long: `hotpatchd is the on-host agent. The patch directory is the desired state:
every signed patch in it is applied to every process that maps its target
module, also to processes started later and libraries loaded later; removing
the file reverts it. After each apply the process is watched for a while:
a crash or a failed health probe marks the patch bad on this host, reverts
it everywhere and keeps it off new processes. Every step is an event in
STATE/events.jsonl (read it with "hotpatch events"). Runs as root.

With --server the agent enrolls with hotpatch-server (the first start needs
an enrollment token, from --enroll-token-file or $HOTPATCH_ENROLL_TOKEN, never
on the command line, and --ca; the identity is then kept in STATE/identity/):
the
patches the server wants on this host are downloaded into STATE/server/, a
second patch directory that works like --patch-dir (a local patch with the
same id wins), and the agent reports its processes, patches and events.
Patches from the server are verified against --trust like any other. If the
server cannot be reached or refuses the device, the agent keeps running with
the patches it has.

Flags override the config file (see packaging/hotpatchd.yaml).`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := &agent.Config{}
			if configPath != "" {
				var err error
				if cfg, err = agent.LoadConfig(configPath); err != nil {
					return err
				}
			}
			f := cmd.Flags()
			if f.Changed("patch-dir") {
				cfg.PatchDir = flags.PatchDir
			}
			if f.Changed("state") {
				cfg.StateDir = flags.StateDir
			}
			if f.Changed("trust") {
				cfg.Trust = flags.Trust
			}
			if f.Changed("pid-namespace") {
				cfg.PIDNamespace = flags.PIDNamespace
			}
			if f.Changed("metrics-listen") {
				cfg.MetricsListen = flags.MetricsListen
			}
			if f.Changed("timeout") {
				cfg.Timeout = agent.Duration(timeout)
			}
			if f.Changed("rescan") {
				cfg.Rescan = agent.Duration(rescan)
			}
			if f.Changed("health-window") {
				cfg.Health.Window = agent.Duration(window)
			}
			if f.Changed("fallback-command") {
				cfg.Fallback.Command = flags.Fallback.Command
			}
			if f.Changed("fallback-window") {
				cfg.Fallback.Window = flags.Fallback.Window
			}
			if f.Changed("quiet") {
				cfg.Quiet = flags.Quiet
			}
			if f.Changed("server") {
				cfg.Server = flags.Server
			}
			if f.Changed("ca") {
				cfg.CA = flags.CA
			}
			if f.Changed("enroll-token") {
				return usageError{errors.New("--enroll-token puts the token where every user of the host can read it (ps); write it to a file (mode 0600) and give --enroll-token-file FILE, or set " + envEnrollToken)}
			}
			if f.Changed("enroll-token-file") {
				cfg.EnrollToken, cfg.EnrollTokenFile = "", flags.EnrollTokenFile
			}
			if tok := strings.TrimSpace(os.Getenv(envEnrollToken)); tok != "" && cfg.EnrollToken == "" && cfg.EnrollTokenFile == "" {
				cfg.EnrollToken = tok
			}
			if f.Changed("name") {
				cfg.Name = flags.Name
			}
			if f.Changed("label") {
				cfg.Labels = map[string]string{}
				for _, l := range labels {
					k, v, ok := strings.Cut(l, "=")
					if !ok || k == "" {
						return usageError{fmt.Errorf("--label %q: give KEY=VALUE, e.g. ring=canary", l)}
					}
					cfg.Labels[k] = v
				}
			}
			a, err := agent.New(*cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return a.Run(ctx)
		},
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "config file (YAML)")
	f.StringVar(&flags.PatchDir, "patch-dir", "", "directory of signed patches to keep applied")
	f.StringVar(&flags.StateDir, "state", "", "directory for the agent's state and event log")
	f.StringArrayVar(&flags.Trust, "trust", nil, "public key a patch must be signed by (repeatable; /etc/hotpatch/trusted/*.pub too)")
	f.StringVar(&flags.PIDNamespace, "pid-namespace", "", "only look after the processes of this PID namespace (a /proc/PID/ns/pid path)")
	f.StringVar(&flags.MetricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (loopback only)")
	f.DurationVar(&timeout, "timeout", 5*time.Second, "how long an apply waits for busy functions")
	f.DurationVar(&rescan, "rescan", 5*time.Second, "how often every process is looked at again (dlopen, missed events)")
	f.DurationVar(&window, "health-window", 10*time.Minute, "how long a patched process is watched for crashes and failed probes")
	f.StringVar(&flags.Fallback.Command, "fallback-command", "", "restart command for a process that cannot be patched (sh -c; $HOTPATCH_PID, $HOTPATCH_EXE, $HOTPATCH_PATCH)")
	f.StringVar(&flags.Fallback.Window, "fallback-window", "", "daily maintenance window for the fallback, HH:MM-HH:MM")
	f.BoolVar(&flags.Quiet, "quiet", false, "do not print events to stdout (they still go to the event log)")
	f.StringVar(&flags.Server, "server", "", "enroll with hotpatch-server at this URL (https://HOST:PORT) and keep its patches applied too")
	f.StringVar(&flags.CA, "ca", "", "the server's CA certificate (its ca.pem), to enroll")
	f.StringVar(&flags.EnrollTokenFile, "enroll-token-file", "", "file holding the server's enrollment token (first start only; or $"+envEnrollToken+")")
	f.StringVar(&flags.EnrollToken, "enroll-token", "", "refused: a token on the command line is readable by every user (ps); use --enroll-token-file")
	f.MarkHidden("enroll-token")
	f.StringVar(&flags.Name, "name", "", "the device's name on the server (default: the host name)")
	f.StringArrayVar(&labels, "label", nil, "a label sent at enrollment, KEY=VALUE (repeatable; ring=NAME asks an operator for a rollout ring)")
	return cmd
}

// envEnrollToken is the environment variable hotpatchd takes the
// enrollment token from when no file is given.
const envEnrollToken = "HOTPATCH_ENROLL_TOKEN"

// AgentMain runs hotpatchd with args and returns the exit status.
func AgentMain(args []string, stdout, stderr io.Writer) int {
	root := NewAgentRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "hotpatchd: %s\n", oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Run 'hotpatchd --help' for usage.")
		return 2
	}
	return 1
}

// newEvents is "hotpatch events".
func newEvents() *cobra.Command {
	var (
		stateDir string
		asJSON   bool
		follow   bool
	)
	cmd := &cobra.Command{
		Use:   "events [--state DIR] [--json] [--follow]",
		Short: "Show the agent's events",
		Long: `events prints the steps hotpatchd recorded in its state directory: patches
loaded and refused, applies, reverts, crashes, failed probes, rollbacks.
--follow keeps printing new events as they come.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			out := cmd.OutOrStdout()
			return agent.ReadEvents(ctx, stateDir, follow, func(e agent.Event) error {
				if asJSON {
					b, err := json.Marshal(e)
					if err != nil {
						return err
					}
					_, err = out.Write(append(b, '\n'))
					return err
				}
				_, err := fmt.Fprintln(out, e.String())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&stateDir, "state", defaultStateDir(), "the agent's state directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep printing new events")
	return cmd
}

func defaultStateDir() string {
	if d := os.Getenv("HOTPATCHD_STATE"); d != "" {
		return d
	}
	return "/var/lib/hotpatchd"
}
