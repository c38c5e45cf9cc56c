package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/hotpatch/hotpatch/client"
	"github.com/hotpatch/hotpatch/server/api"
)

// Environment variables of the connection flags of "hotpatch fleet".
const (
	envServer = "HOTPATCH_SERVER"
	envToken  = "HOTPATCH_TOKEN"
	envCA     = "HOTPATCH_CA"
)

// eventsPage is how many audit events "fleet events" asks for at a time.
const eventsPage = 500

// fleetConn holds the connection flags shared by every "hotpatch fleet"
// command; a flag left empty falls back to its environment variable.
type fleetConn struct {
	server, token, ca string
}

func (f *fleetConn) add(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.server, "server", "", "the server, https://HOST:PORT (default $"+envServer+")")
	pf.StringVar(&f.token, "token", "", "admin token (default $"+envToken+"; the environment keeps it out of ps)")
	pf.StringVar(&f.ca, "ca", "", "the server's CA certificate, DATA/ca.pem (default $"+envCA+")")
}

func orEnv(v, env string) string {
	if v != "" {
		return v
	}
	return strings.TrimSpace(os.Getenv(env))
}

// client builds the client from the flags and environment.
func (f *fleetConn) client() (*client.Client, error) {
	server := orEnv(f.server, envServer)
	if server == "" {
		return nil, usageError{fmt.Errorf("no server: give --server https://HOST:PORT or set %s", envServer)}
	}
	caFile := orEnv(f.ca, envCA)
	if caFile == "" {
		return nil, usageError{fmt.Errorf("no CA certificate: give --ca FILE (the server's ca.pem) or set %s", envCA)}
	}
	token := orEnv(f.token, envToken)
	if token == "" {
		return nil, usageError{fmt.Errorf("no token: give --token TOKEN or set %s", envToken)}
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA certificate: %w", err)
	}
	return client.New(server, caPEM, client.WithToken(token))
}

// fleetFunc is the body of a fleet command.
type fleetFunc func(ctx context.Context, c *client.Client, out io.Writer, args []string) error

// run connects and calls fn, interrupted by SIGINT or SIGTERM.
func (f *fleetConn) run(fn fleetFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := f.client()
		if err != nil {
			return err
		}
		defer c.CloseIdleConnections()
		ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return explain(fn(ctx, c, cmd.OutOrStdout(), args))
	}
}

// explain adds what to check to the errors whose usual cause is the
// command's own settings.
func explain(err error) error {
	var (
		unknownCA *x509.UnknownAuthorityError
		verify    *tls.CertificateVerificationError
		host      x509.HostnameError
	)
	switch {
	case err == nil:
		return nil
	case client.IsStatus(err, http.StatusUnauthorized):
		return fmt.Errorf("%w; check --token (%s)", err, envToken)
	case errors.As(err, &host):
		return fmt.Errorf("%w; use a name the server's certificate has (the server's --host adds names)", err)
	case errors.As(err, &unknownCA), errors.As(err, &verify):
		return fmt.Errorf("%w; check that --ca (%s) is this server's ca.pem", err, envCA)
	}
	return err
}

func newFleet() *cobra.Command {
	var conn fleetConn
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Publish patches and roll them out to the devices of a hotpatch-server",
		Long: `fleet talks to hotpatch-server: publish signed patches, roll them out ring by
ring to the enrolled devices, follow, halt, resume or roll back a rollout,
list and revoke devices, read the audit log and the per-CVE report.

Every subcommand needs the server's URL (--server or HOTPATCH_SERVER), its
CA certificate, the data directory's ca.pem (--ca or HOTPATCH_CA), and an
admin token (--token or HOTPATCH_TOKEN) whose role allows the command:
viewer reads, operator publishes and steers rollouts, admin revokes devices.`,
		Args: cobra.ArbitraryArgs,
		RunE: parentRun,
	}
	conn.add(cmd)
	cmd.AddCommand(newFleetToken(&conn))
	cmd.AddCommand(newFleetPublish(&conn), newFleetPatches(&conn), newFleetRollout(&conn),
		newFleetDevices(&conn), newFleetEvents(&conn), newFleetReport(&conn))
	wrapTree(cmd)
	return cmd
}

// parentRun is the RunE of a command that only groups others: cobra
// would print the help for an unknown subcommand and succeed.
func parentRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
	}
	return cmd.Help()
}

// wrapTree makes the argument errors of cmd's subcommands usage errors
// (NewRoot does it for its own children only).
func wrapTree(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		c.Args = wrapArgs(c.Args)
		wrapTree(c)
	}
}

func newFleetPublish(conn *fleetConn) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "publish [--json] FILE.hpatch",
		Short: "Upload a signed patch to the server",
		Long: `publish uploads a signed patch file. The server checks its signature; when
the server was given publisher keys (hotpatch-server --publisher, or keys in
/etc/hotpatch/trusted/), the signer must be one of them, otherwise any valid
signature is accepted (agents still verify it against their own trusted
keys). It stores the file by its SHA-256 and prints what it stored.
Publishing the same file again is harmless. Needs an operator token.`,
		Args: cobra.ExactArgs(1),
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			info, err := c.Publish(ctx, data)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(out, info)
			}
			return writePatchInfo(out, info)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the published patch as JSON")
	return cmd
}

func writePatchInfo(w io.Writer, p *api.PatchInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "published\t%s level %d\n", safe(p.ID), p.Version)
	fmt.Fprintf(tw, "sha256\t%s\n", safe(p.SHA256))
	fmt.Fprintf(tw, "cves\t%s\n", dash(strings.Join(p.CVEs, ", ")))
	fmt.Fprintf(tw, "severity\t%s\n", dash(p.Severity))
	fmt.Fprintf(tw, "target\t%s (build-id %s)\n", safe(p.TargetName), safe(p.TargetBuildID))
	fmt.Fprintf(tw, "functions\t%s\n", dash(strings.Join(p.Functions, ", ")))
	fmt.Fprintf(tw, "signer\tkey %s\n", safe(p.Signer))
	fmt.Fprintf(tw, "size\t%d bytes\n", p.Size)
	return tw.Flush()
}

func newFleetPatches(conn *fleetConn) *cobra.Command {
	return listCommand(conn, list[api.PatchInfo]{
		use: "patches [--json]", short: "List the published patches", what: "patches", empty: "no patch published",
		fetch:  (*client.Client).Patches,
		header: "ID\tLEVEL\tCVES\tSEVERITY\tTARGET\tPUBLISHED\tSHA256",
		row: func(p api.PatchInfo) string {
			return fmt.Sprintf("%s\t%d\t%s\t%s\t%s\t%s\t%s", safe(p.ID), p.Version, dash(strings.Join(p.CVEs, ",")),
				dash(p.Severity), safe(p.TargetName), when(p.Published), safe(p.SHA256))
		},
	})
}

// list describes a "list the Ts" command: how to fetch them, the
// message when there is none, and the table's header and rows.
type list[T any] struct {
	use, short, long string
	what             string // "patches": --json prints the patches as JSON
	empty            string
	fetch            func(*client.Client, context.Context) ([]T, error)
	header           string
	row              func(T) string
}

// listCommand makes a list command: a table, or --json (an empty list
// is [], not null).
func listCommand[T any](conn *fleetConn, l list[T]) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   l.use,
		Short: l.short,
		Long:  l.long,
		Args:  cobra.NoArgs,
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, _ []string) error {
			items, err := l.fetch(c, ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(out, nonNil(items))
			}
			if len(items) == 0 && l.empty != "" {
				_, err := fmt.Fprintln(out, l.empty)
				return err
			}
			tw := newTable(out)
			fmt.Fprintln(tw, l.header)
			for _, it := range items {
				fmt.Fprintln(tw, l.row(it))
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the "+l.what+" as JSON")
	return cmd
}

// writeOne prints one answer: as JSON, or with its text writer.
func writeOne[T any](out io.Writer, asJSON bool, v *T, text func(io.Writer, *T) error) error {
	if asJSON {
		return writeJSON(out, v)
	}
	return text(out, v)
}

func newFleetRollout(conn *fleetConn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Start, follow and steer rollouts",
		Long: `A rollout brings a published patch to the devices ring by ring: a ring is the
approved devices an operator put in ring NAME ("all": every approved
device; see devices approve). Each ring is active until every device in it
applied the patch (or does not need it) or failed; then it soaks; the next
ring starts when the soak ends within the failure budget. Exceeding the
budget halts the rollout and reverts the patch in the ring that failed; the
rings before it keep the patch until an operator rolls them back
(rollback --rings) or not. One rollout of a patch runs at a time.`,
		Args: cobra.ArbitraryArgs,
		RunE: parentRun,
	}
	cmd.AddCommand(newRolloutStart(conn), newRolloutStatus(conn), newRolloutList(conn),
		newRolloutAction(conn, client.ActionHalt, "Halt a rollout: no further device gets the patch",
			"halt stops a rollout at once: devices that have the patch keep it, no other\ndevice gets it. Needs an operator token."),
		newRolloutAction(conn, client.ActionResume, "Resume a halted rollout",
			"resume continues a halted rollout where it stopped. Needs an operator token."),
		newRolloutAction(conn, client.ActionRollback, "Roll a rollout back: revert the patch on its devices",
			"rollback halts a rollout and has every device where the patch landed revert it;\nwith --rings, only the devices of those rings (the others keep it). Needs an\noperator token."))
	return cmd
}

func newRolloutStart(conn *fleetConn) *cobra.Command {
	var (
		req     api.RolloutRequest
		windows []string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "start PATCH --rings RING,… [--soak 10m] [--max-failures N] [--window RING=HH:MM-HH:MM]… [--critical] [--json]",
		Short: "Start rolling a published patch out",
		Long: `start begins a rollout of PATCH (a patch id, meaning its newest level, or a
SHA-256) through the rings given, in order. --soak is how long each ring is
watched after it finished before the next one starts; more than
--max-failures failed devices in a ring halt the rollout. --window limits a
ring to a daily maintenance window (server local time); --critical ignores
the windows. Needs an operator token.`,
		Args: cobra.ExactArgs(1),
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, args []string) error {
			req.Patch = args[0]
			var err error
			if req.Windows, err = parseWindows(windows, req.Rings); err != nil {
				return err
			}
			r, err := c.StartRollout(ctx, req)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(out, r)
			}
			return writeRollout(out, r)
		}),
	}
	f := cmd.Flags()
	f.StringSliceVar(&req.Rings, "rings", nil, "the rings, in order (comma-separated; \"all\" is every device)")
	f.DurationVar(&req.Soak, "soak", 0, "how long a finished ring is watched before the next one starts")
	f.IntVar(&req.MaxFailures, "max-failures", 0, "failed devices a ring may have; one more halts the rollout")
	f.StringArrayVar(&windows, "window", nil, "maintenance window of a ring, RING=HH:MM-HH:MM (repeatable)")
	f.BoolVar(&req.Critical, "critical", false, "ignore the maintenance windows")
	f.BoolVar(&asJSON, "json", false, "print the rollout as JSON")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if len(req.Rings) == 0 {
			return usageError{errors.New("give the rings with --rings, e.g. --rings canary,broad (or --rings all)")}
		}
		for i, r := range req.Rings {
			r = strings.TrimSpace(r)
			if r == "" || slices.Contains(req.Rings[:i], r) {
				return usageError{fmt.Errorf("--rings %s: ring names must be non-empty and distinct", strings.Join(req.Rings, ","))}
			}
			req.Rings[i] = r
		}
		if req.Soak < 0 || req.MaxFailures < 0 {
			return usageError{errors.New("--soak and --max-failures cannot be negative")}
		}
		return nil
	}
	return cmd
}

// parseWindows turns --window RING=HH:MM-HH:MM flags into the request's map.
func parseWindows(flags, rings []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, f := range flags {
		ring, win, ok := strings.Cut(f, "=")
		if !ok || !validWindow(win) {
			return nil, usageError{fmt.Errorf("--window %q: want RING=HH:MM-HH:MM", f)}
		}
		if !slices.Contains(rings, ring) {
			return nil, usageError{fmt.Errorf("--window %q: ring %q is not one of --rings %s", f, ring, strings.Join(rings, ","))}
		}
		if _, dup := m[ring]; dup {
			return nil, usageError{fmt.Errorf("--window: ring %q has two windows", ring)}
		}
		m[ring] = win
	}
	return m, nil
}

func validWindow(w string) bool {
	from, to, ok := strings.Cut(w, "-")
	if !ok || len(from) != 5 || len(to) != 5 {
		return false
	}
	_, err1 := time.Parse("15:04", from)
	_, err2 := time.Parse("15:04", to)
	return err1 == nil && err2 == nil
}

func newRolloutStatus(conn *fleetConn) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json] ID",
		Short: "Show a rollout's progress, ring by ring",
		Args:  cobra.ExactArgs(1),
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, args []string) error {
			r, err := c.Rollout(ctx, args[0])
			if err != nil {
				return err
			}
			return writeOne(out, asJSON, r, writeRollout)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rollout as JSON")
	return cmd
}

func newRolloutList(conn *fleetConn) *cobra.Command {
	return listCommand(conn, list[api.Rollout]{
		use: "list [--json]", short: "List the rollouts", what: "rollouts", empty: "no rollout",
		fetch:  (*client.Client).Rollouts,
		header: "ID\tPATCH\tSTATE\tRINGS\tCREATED",
		row: func(r api.Rollout) string {
			rings := make([]string, len(r.Rings))
			for i, g := range r.Rings {
				rings[i] = safe(g.Name) + ":" + safe(g.State)
			}
			return fmt.Sprintf("%s\t%s level %d\t%s\t%s\t%s", safe(r.ID), safe(r.Patch.ID), r.Patch.Version, safe(r.State),
				dash(strings.Join(rings, " ")), when(r.Created))
		},
	})
}

func newRolloutAction(conn *fleetConn, action, short, long string) *cobra.Command {
	var (
		asJSON bool
		rings  []string
	)
	use := action + " [--json] ID"
	if action == client.ActionRollback {
		use = action + " [--rings RING,…] [--json] ID"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, args []string) error {
			var r *api.Rollout
			var err error
			if len(rings) > 0 {
				r, err = c.RollbackRings(ctx, args[0], rings)
			} else {
				r, err = c.RolloutAction(ctx, args[0], action)
			}
			if err != nil {
				return err
			}
			return writeOne(out, asJSON, r, writeRollout)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the rollout as JSON")
	if action == client.ActionRollback {
		cmd.Flags().StringSliceVar(&rings, "rings", nil, "roll back only these rings (comma-separated); the others keep the patch")
	}
	return cmd
}

// writeRollout writes a rollout's header and its table of rings.
func writeRollout(w io.Writer, r *api.Rollout) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "rollout\t%s\n", safe(r.ID))
	fmt.Fprintf(tw, "state\t%s\n", safe(r.State))
	if r.Reason != "" {
		fmt.Fprintf(tw, "reason\t%s\n", safe(r.Reason))
	}
	fmt.Fprintf(tw, "patch\t%s level %d (%s)\n", safe(r.Patch.ID), r.Patch.Version, dash(strings.Join(r.Patch.CVEs, ", ")))
	fmt.Fprintf(tw, "sha256\t%s\n", safe(r.Patch.SHA256))
	policy := fmt.Sprintf("soak %s, at most %d failed device(s) per ring", r.Soak, r.MaxFailures)
	if r.Critical {
		policy += ", critical (windows ignored)"
	}
	fmt.Fprintf(tw, "policy\t%s\n", policy)
	fmt.Fprintf(tw, "created\t%s\n", when(r.Created))
	fmt.Fprintf(tw, "updated\t%s\n", when(r.Updated))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "RING\tSTATE\tDEVICES\tAPPLIED\tNOT NEEDED\tFAILED\tPENDING\tWINDOW")
	for _, g := range r.Rings {
		state := safe(g.State)
		if g.State == api.RingSoaking && !g.SoakUntil.IsZero() {
			state += " until " + when(g.SoakUntil)
		}
		if g.Revert {
			state += ", reverting"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", safe(g.Name), state, g.Devices, g.Applied, g.NotNeeded,
			g.Failed, g.Pending, dash(g.Window))
	}
	return tw.Flush()
}

func newFleetDevices(conn *fleetConn) *cobra.Command {
	cmd := listCommand(conn, list[api.Device]{
		use: "devices [--json]", short: "List the enrolled devices", what: "devices", empty: "no device enrolled",
		long: `devices lists the enrolled devices, revoked ones included, with their ring
(set by an operator, or by the enrollment token they came with; a device
that is not approved is in no ring and gets no rollout), their labels (a
ring=… label is only the device's request), when they were last seen, and
what their last inventory reported.`,
		fetch:  (*client.Client).Devices,
		header: "ID\tNAME\tHOSTNAME\tRING\tLABELS\tSTATE\tLAST SEEN\tPROCESSES\tAPPLIED",
		row: func(d api.Device) string {
			state := "enrolled"
			if !d.Revoked.IsZero() {
				state = "revoked"
			}
			ring := safe(d.Ring)
			if d.Approved.IsZero() {
				ring = "(not approved)"
			}
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s", safe(d.ID), dash(d.Name), dash(d.Hostname), ring,
				dash(labels(d.Labels)), state, when(d.LastSeen), d.Processes, dash(strings.Join(d.Applied, ",")))
		},
	})
	cmd.AddCommand(newDevicesRevoke(conn), newDevicesApprove(conn), newDevicesSetRing(conn))
	return cmd
}

func newDevicesRevoke(conn *fleetConn) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "revoke [--json] ID",
		Short: "Revoke a device: the server refuses its certificate from now on",
		Long: `revoke marks a device revoked. The server checks every device request
against its store, so the device's certificate is refused at once; to bring
the host back, enroll it again. Needs an admin token.`,
		Args: cobra.ExactArgs(1),
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, args []string) error {
			d, err := c.RevokeDevice(ctx, args[0])
			if err != nil {
				return err
			}
			return writeOne(out, asJSON, d, func(w io.Writer, d *api.Device) error {
				_, err := fmt.Fprintf(w, "revoked device %s (%s) at %s\n", safe(d.ID), dash(d.Name), when(d.Revoked))
				return err
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the device as JSON")
	return cmd
}

// newDevicesApprove is "hotpatch fleet devices approve".
func newDevicesApprove(conn *fleetConn) *cobra.Command {
	var (
		asJSON bool
		ring   string
	)
	cmd := &cobra.Command{
		Use:   "approve [--ring RING] [--json] ID",
		Short: "Approve a device into a ring: rollouts count it from then on",
		Long: `approve puts an enrolled device in a rollout ring. Until then a device that
enrolled with a token not bound to a ring is in no ring: it gets no rollout
and its reports count against no budget. Without --ring, the ring its
ring=… label asks for. Needs an operator token.`,
		Args: cobra.ExactArgs(1),
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, args []string) error {
			if ring == "" {
				ds, err := c.Devices(ctx)
				if err != nil {
					return err
				}
				for _, d := range ds {
					if d.ID == args[0] {
						ring = d.Labels["ring"]
					}
				}
				if ring == "" {
					return usageError{fmt.Errorf("device %s asks for no ring (no ring= label); give --ring RING", args[0])}
				}
			}
			return approve(ctx, c, out, args[0], ring, asJSON)
		}),
	}
	cmd.Flags().StringVar(&ring, "ring", "", "the ring (default: the one the device's ring= label asks for)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the device as JSON")
	return cmd
}

// newDevicesSetRing is "hotpatch fleet devices set-ring".
func newDevicesSetRing(conn *fleetConn) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "set-ring [--json] ID RING",
		Short: "Move a device to another ring (approving it)",
		Long: `set-ring puts a device in a ring, approved. Rollouts whose ring already
started keep the devices it started with; the device counts in the rings
that start from now on. Needs an operator token.`,
		Args: cobra.ExactArgs(2),
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, args []string) error {
			return approve(ctx, c, out, args[0], args[1], asJSON)
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the device as JSON")
	return cmd
}

func approve(ctx context.Context, c *client.Client, out io.Writer, id, ring string, asJSON bool) error {
	d, err := c.ApproveDevice(ctx, id, ring)
	if err != nil {
		return err
	}
	return writeOne(out, asJSON, d, func(w io.Writer, d *api.Device) error {
		_, err := fmt.Fprintf(w, "device %s (%s) is in ring %s\n", safe(d.ID), dash(d.Name), safe(d.Ring))
		return err
	})
}

func newFleetEvents(conn *fleetConn) *cobra.Command {
	var (
		after  int64
		limit  int
		asJSON bool
		filter api.EventQuery
	)
	cmd := &cobra.Command{
		Use:   "events [--after SEQ] [--limit N] [--type T] [--device ID] [--rollout ID] [--patch ID] [--actor A] [--grep TEXT] [--json]",
		Short: "Show the server's audit log",
		Long: `events prints the audit log, oldest first: admin actions (publish, rollout
start, halt, resume, rollback, revoke), rollout steps and device events, each
with its sequence number. --after SEQ shows only the later ones, so
"--after" the last number seen prints what is new. The filters keep the
events of one type, device, rollout or patch, by one actor (token:NAME,
device:ID, server, or a prefix such as device:), or whose message contains
a text. --json prints one JSON object per line.`,
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, _ []string) error {
			n := 0
			for {
				page := eventsPage
				if limit > 0 {
					page = min(page, limit-n)
				}
				q := filter
				q.After, q.Limit = after, page
				evs, err := c.FindEvents(ctx, q)
				if err != nil {
					return err
				}
				if len(evs) == 0 {
					return nil
				}
				for _, e := range evs {
					if e.Seq <= after {
						return nil // a server that ignores "after": stop rather than loop
					}
					after = e.Seq
					if err := writeAuditEvent(out, e, asJSON); err != nil {
						return err
					}
					if n++; limit > 0 && n >= limit {
						return nil
					}
				}
			}
		}),
	}
	cmd.Flags().Int64Var(&after, "after", 0, "show the events after this sequence number")
	cmd.Flags().IntVar(&limit, "limit", 0, "show at most this many events (0: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	cmd.Flags().StringVar(&filter.Type, "type", "", "only events of this type (applied, rollout_halt, …)")
	cmd.Flags().StringVar(&filter.Device, "device", "", "only events of this device id")
	cmd.Flags().StringVar(&filter.Rollout, "rollout", "", "only events of this rollout")
	cmd.Flags().StringVar(&filter.Patch, "patch", "", "only events of this patch id")
	cmd.Flags().StringVar(&filter.Actor, "actor", "", "only events by this actor (token:NAME, device:ID, server; device: for every device)")
	cmd.Flags().StringVar(&filter.Text, "grep", "", "only events whose message contains this text (any case)")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if after < 0 || limit < 0 {
			return usageError{errors.New("--after and --limit cannot be negative")}
		}
		return nil
	}
	return cmd
}

func writeAuditEvent(w io.Writer, e api.AuditEvent, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
	s := fmt.Sprintf("%d %s %s %s", e.Seq, e.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), dash(e.Actor), dash(e.Type))
	for _, kv := range [][2]string{{"device", e.Device}, {"rollout", e.Rollout}, {"patch", e.Patch}} {
		if kv[1] != "" {
			s += " " + kv[0] + "=" + safe(kv[1])
		}
	}
	if e.Message != "" {
		s += ": " + safe(e.Message)
	}
	_, err := fmt.Fprintln(w, s)
	return err
}

func newFleetReport(conn *fleetConn) *cobra.Command {
	var (
		cve           string
		asJSON, asCSV bool
	)
	cmd := &cobra.Command{
		Use:   "report [--cve ID] [--json|--csv]",
		Short: "Show, per CVE, the devices vulnerable, protected in memory and fixed on disk",
		Long: `report counts, for each CVE named by a published patch, the devices that run
a vulnerable build (some process maps the build a patch for the CVE targets),
those protected in memory (every such process carries the patch) and those
fixed on disk (no process maps the vulnerable build any more, or only
processes whose file on disk was upgraded: a restart finishes the job); then
the progress of the rollouts, ring by ring. --cve shows one CVE and its
devices. --csv prints one row per CVE, for spreadsheets.`,
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, _ []string) error {
			rep, err := c.Report(ctx, cve)
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return writeJSON(out, rep)
			case asCSV:
				cw := csv.NewWriter(out)
				cw.Write([]string{"cve", "patches", "vulnerable", "protected", "fixed_on_disk"})
				for _, r := range rep.CVEs {
					cw.Write([]string{r.CVE, strings.Join(r.Patches, " "), strconv.Itoa(r.Vulnerable),
						strconv.Itoa(r.Protected), strconv.Itoa(r.FixedOnDisk)})
				}
				cw.Flush()
				return cw.Error()
			}
			return writeReport(out, rep, cve)
		}),
	}
	cmd.Flags().StringVar(&cve, "cve", "", "only this CVE, with its devices")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().BoolVar(&asCSV, "csv", false, "print one CSV row per CVE")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if asJSON && asCSV {
			return usageError{errors.New("give at most one of --json and --csv")}
		}
		return nil
	}
	return cmd
}

// writeReport writes the report as tables; the devices of a CVE only when
// one was asked for (a fleet's would be thousands of lines).
func writeReport(w io.Writer, rep *api.Report, cve string) error {
	if len(rep.CVEs) == 0 {
		if cve != "" {
			fmt.Fprintf(w, "no published patch names %s\n", safe(cve))
		} else {
			fmt.Fprintln(w, "no published patch names a CVE")
		}
	} else {
		tw := newTable(w)
		fmt.Fprintln(tw, "CVE\tVULNERABLE\tPROTECTED\tFIXED ON DISK\tPATCHES")
		for _, r := range rep.CVEs {
			vuln := strconv.Itoa(r.Vulnerable)
			if r.NeedRestart > 0 { // patched with a start-up-only patch: still exposed
				vuln += fmt.Sprintf(" (%d restart needed)", r.NeedRestart)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", safe(r.CVE), vuln, r.Protected, r.FixedOnDisk, dash(strings.Join(r.Patches, ",")))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if cve != "" && slices.ContainsFunc(rep.CVEs, func(r api.CVEReport) bool { return len(r.Devices) > 0 }) {
			fmt.Fprintln(w)
			tw := newTable(w)
			fmt.Fprintln(tw, "CVE\tDEVICE\tNAME\tSTATE")
			for _, r := range rep.CVEs {
				for _, d := range r.Devices {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", safe(r.CVE), safe(d.Device), dash(d.Name), dash(d.State))
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	if len(rep.Rings) == 0 {
		return nil
	}
	rings := slices.Clone(rep.Rings)
	sort.SliceStable(rings, func(i, j int) bool { return rings[i].Rollout < rings[j].Rollout })
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "ROLLOUT\tRING\tSTATE\tAPPLIED")
	for _, g := range rings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\n", safe(g.Rollout), safe(g.Ring), safe(g.State), g.Applied, g.Devices)
	}
	return tw.Flush()
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// nonNil makes an empty list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// safe returns server-supplied text fit for a terminal and a table: text
// with control characters (escape sequences, tabs, newlines) is quoted.
func safe(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }) < 0 {
		return s
	}
	return strconv.QuoteToGraphic(s)
}

// dash is safe(s), or "-" for an empty s.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return safe(s)
}

// when formats a time for a table, "-" when unset.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// labels formats a device's labels as k=v,k=v, sorted.
func labels(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	for i, k := range keys {
		keys[i] = safe(k + "=" + m[k])
	}
	return strings.Join(keys, ",")
}

// newFleetToken is "hotpatch fleet token".
func newFleetToken(conn *fleetConn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage admin and enrollment tokens",
	}
	var (
		role, name, ring string
		uses             int
		ttl              time.Duration
		asJSON           bool
	)
	create := &cobra.Command{
		Use:   "create --role viewer|operator|admin|enroll --name NAME [--ring RING] [--uses N] [--ttl 24h] [--json]",
		Short: "Make an admin token with a role, or an enrollment token (needs an admin token)",
		Long: `token create makes a token with a role: viewer (read everything), operator
(publish, start and steer rollouts) or admin (also revoke devices and make
tokens); or, with --role enroll, a token agents enroll with: it works for
--ttl (default 24h, at most 30 days) and --uses enrollments (default: any
number), and with --ring its devices join that ring at once, approved
(without, each waits for "devices approve"). It is printed once; the server
keeps only its hash. Give it to hotpatchd in a file (--enroll-token-file)
or the environment (HOTPATCH_ENROLL_TOKEN), never on a command line.`,
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, _ []string) error {
			var t *api.TokenResponse
			var err error
			if role == api.RoleEnroll {
				t, err = c.NewEnrollToken(ctx, name, ring, uses, ttl)
			} else {
				if ring != "" || uses != 0 || ttl != 0 {
					return usageError{errors.New("--ring, --uses and --ttl are for --role enroll")}
				}
				t, err = c.NewToken(ctx, role, name)
			}
			if err != nil {
				return err
			}
			return writeOne(out, asJSON, t, func(w io.Writer, t *api.TokenResponse) error {
				_, err := fmt.Fprintln(w, t.Token)
				return err
			})
		}),
	}
	create.Flags().StringVar(&role, "role", "", "viewer, operator, admin, or enroll (for agents)")
	create.Flags().StringVar(&name, "name", "", "who or what the token is for (shown in the audit log)")
	create.Flags().StringVar(&ring, "ring", "", "enroll tokens: the ring its devices join, approved (default: they wait for approval)")
	create.Flags().IntVar(&uses, "uses", 0, "enroll tokens: how many enrollments it allows (default: any number)")
	create.Flags().DurationVar(&ttl, "ttl", 0, "enroll tokens: how long it works (default 24h, at most 720h)")
	create.Flags().BoolVar(&asJSON, "json", false, "print the token, its role and name as JSON")
	cmd.AddCommand(create, newFleetTokenList(conn), newFleetTokenRevoke(conn), newFleetTokenRotate(conn))
	return cmd
}

// newFleetTokenList is "hotpatch fleet token list".
func newFleetTokenList(conn *fleetConn) *cobra.Command {
	return listCommand(conn, list[api.TokenInfo]{
		use: "list [--json]", short: "List the tokens the server knows (needs an admin token)", what: "tokens",
		long: `token list prints every token's id, role, name and creation time, never
its value (the server keeps only hashes); for enrollment tokens also their
ring, uses and expiry. "data dir" marks the server's own admin.token and
enroll.token, which are rotated rather than revoked.`,
		fetch:  (*client.Client).Tokens,
		header: "ID\tROLE\tNAME\tCREATED\tRING\tUSES\tEXPIRES\t",
		row: func(t api.TokenInfo) string {
			note, uses := "", "-"
			if t.DataDir {
				note = "data dir"
			}
			if t.Role == api.RoleEnroll {
				uses = strconv.Itoa(t.Uses)
				if t.MaxUses > 0 {
					uses += "/" + strconv.Itoa(t.MaxUses)
				}
			}
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", safe(t.ID), safe(t.Role), dash(t.Name), when(t.Created),
				dash(t.Ring), uses, when(t.Expires), note)
		},
	})
}

// newFleetTokenRevoke is "hotpatch fleet token revoke".
func newFleetTokenRevoke(conn *fleetConn) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token: the server refuses it from now on (needs an admin token)",
		Long: `token revoke forgets a token by its id (see token list): every request with
it is refused from now on, and the dashboard sessions signed in with it end
at once. The server's own admin.token and enroll.token (rotate them), and
the token the command runs with, are refused.`,
		Args: cobra.ExactArgs(1),
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, args []string) error {
			t, err := c.RevokeToken(ctx, args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(out, "revoked token %s (%s, %s)\n", t.ID, safe(t.Name), t.Role)
			return err
		}),
	}
}

// newFleetTokenRotate is "hotpatch fleet token rotate".
func newFleetTokenRotate(conn *fleetConn) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate [--json] admin|enroll",
		Short: "Replace the server's admin.token or enroll.token; the old one stops working (needs an admin token)",
		Long: `token rotate makes a new value for the server's data-directory token, writes
it to the server's file (admin.token or enroll.token), prints it, and revokes
the old value at once: do it when the file may have been read by someone
else. Rotating admin revokes the token this command may run with: use the
printed one from then on. Removing the file and restarting the server
rotates it too.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"admin", "enroll"},
		RunE: conn.run(func(ctx context.Context, c *client.Client, out io.Writer, args []string) error {
			if args[0] != "admin" && args[0] != "enroll" {
				return usageError{fmt.Errorf("rotate %q: give admin or enroll", args[0])}
			}
			t, err := c.RotateToken(ctx, args[0])
			if err != nil {
				return err
			}
			return writeOne(out, asJSON, t, func(w io.Writer, t *api.TokenResponse) error {
				_, err := fmt.Fprintln(w, t.Token)
				return err
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the new token as JSON")
	return cmd
}
