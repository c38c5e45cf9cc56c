package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/internal/version"
	"github.com/hotpatch/hotpatch/server"
)

// NewServerRoot returns the command of hotpatch-server.
func NewServerRoot(stdout, stderr io.Writer) *cobra.Command {
	var (
		cfg server.Config
		db  string
	)
	cmd := &cobra.Command{
		Use:   "hotpatch-server --data DIR [--listen ADDR] [--host NAME]… --publisher KEY.pub…|--any-publisher",
		Short: "The fleet control plane: enrollment, patch catalog, rollouts, reports",
		Long: `hotpatch-server enrolls hosts (hotpatchd --server), keeps the catalog of
signed patches, runs rollouts ring by ring with soak times and failure
budgets, and reports which hosts are protected against which CVE; a web
dashboard at /ui/ shows it live (sign in with an admin token). HTTPS
only (TLS 1.3). The first start initialises DIR: ca.pem (give it to agents
and admins), admin.token, enroll.token, and the SQLite database; other
users must not read DIR (the server makes it 0700, its keys and tokens 0600,
and warns when it had to). A published patch must be signed by a
--publisher key, unless --any-publisher is given.`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.DB = db
			cfg.TrustDir = trustDir
			srv, err := server.New(cfg)
			if err != nil {
				return err
			}
			if err := srv.Start(); err != nil {
				srv.Close()
				return err
			}
			fmt.Fprintf(stdout, "hotpatch-server listening on %s (data %s); dashboard at %s/ui/\n", srv.URL(), cfg.DataDir, srv.URL())
			if cfg.AnyPublisher {
				fmt.Fprintln(stderr, "hotpatch-server: --any-publisher: the catalog takes a patch signed by any key (agents still check signatures with their own keys)")
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			<-ctx.Done()
			return srv.Close()
		},
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", "", "data directory (CA, tokens, database); created on first start")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8443", "address to listen on")
	f.StringArrayVar(&cfg.Hosts, "host", nil, "extra name or address for the server certificate (repeatable)")
	f.StringArrayVar(&cfg.Publishers, "publisher", nil, "public key a published patch must be signed by (repeatable; "+trustDir+"/*.pub too)")
	f.BoolVar(&cfg.AnyPublisher, "any-publisher", false, "accept a patch signed by any key into the catalog (default: only --publisher keys)")
	f.StringVar(&db, "db", "", "PostgreSQL URL (postgres://…); default: SQLite in --data. Several servers on one database serve one fleet")
	f.DurationVar(&cfg.Tick, "tick", time.Second, "how often rollouts are driven")
	f.DurationVar(&cfg.SessionTTL, "session-ttl", 12*time.Hour, "how long a dashboard sign-in lasts")
	return cmd
}

// ServerMain runs hotpatch-server with args and returns the exit status.
func ServerMain(args []string, stdout, stderr io.Writer) int {
	root := NewServerRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "hotpatch-server: %s\n", oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown") {
		fmt.Fprintln(stderr, "Run 'hotpatch-server --help' for usage.")
		return 2
	}
	return 1
}
