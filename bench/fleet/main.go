//go:build linux

// Command fleet measures hotpatch-server under a fleet of simulated agents
// that speak the real protocol: each enrolls (its own key, CSR and client
// certificate), reports an inventory, and holds a long-poll over its own
// TLS connection; when told to apply a patch it reports it applied at once
// (the engine's time is measured elsewhere). It prints how long a rollout
// takes to reach the agents and to finish, how many long-polls the server
// holds, and the server's memory per agent.
//
//	go run ./bench/fleet [-agents 1000,10000] [-db sqlite|postgres]
//
// The server runs as its own process (built from ./cmd/hotpatch-server) on
// 127.0.0.1, so its memory is its own.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/client"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/pgtest"
	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
)

var (
	agentCounts = flag.String("agents", "1000,10000", "fleet sizes to measure")
	dbKind      = flag.String("db", "sqlite", "sqlite or postgres")
	canaryShare = flag.Int("canary", 1, "percent of the agents in the canary ring")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		pgtest.Stop()
		os.Exit(1)
	}
	pgtest.Stop()
}

func run() error {
	data, buildID, err := makePatch()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "hotpatch-bench-fleet")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "hotpatch-server")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/hotpatch-server").CombinedOutput(); err != nil {
		return fmt.Errorf("building hotpatch-server: %v\n%s", err, out)
	}
	fmt.Printf("| db | agents | enroll all | rollout reaches all (p50 / p99 / last) | rollout done | long-polls held | server RSS | per agent |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range strings.Split(*agentCounts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		if err := measure(dir, bin, n, data, buildID); err != nil {
			return err
		}
	}
	return nil
}

func makePatch() ([]byte, string, error) {
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		return nil, "", err
	}
	o, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		return nil, "", err
	}
	f, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		return nil, "", err
	}
	u, err := builder.Build(o.Program, f.Program, builder.Options{ID: "bounds-fix", CVEs: []string{"CVE-2026-0001"}})
	if err != nil {
		return nil, "", err
	}
	key, _, err := patch.GenerateKey()
	if err != nil {
		return nil, "", err
	}
	data, err := patch.Sign(u, key)
	if err != nil {
		return nil, "", err
	}
	return data, fmt.Sprintf("%x", u.Target.BuildID), nil
}

type agent struct {
	c        *client.Client
	canary   bool
	received atomic.Int64 // unix nanos when told to apply
}

func measure(base, bin string, n int, data []byte, buildID string) error {
	dataDir := filepath.Join(base, fmt.Sprintf("data-%s-%d", *dbKind, n))
	args := []string{"--data", dataDir, "--listen", "127.0.0.1:0", "--tick", "100ms", "--any-publisher"}
	if *dbKind == "postgres" {
		db, err := pgtest.NewDatabase()
		if err != nil {
			return err
		}
		args = append(args, "--db", db)
	}
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	line := make([]byte, 256)
	k, _ := out.Read(line)
	f := strings.Fields(string(line[:k]))
	if len(f) < 4 {
		return fmt.Errorf("server said %q", line[:k])
	}
	url := f[3]
	ca, _ := os.ReadFile(filepath.Join(dataDir, "ca.pem"))
	adminTok, _ := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	admin, err := client.New(url, ca, client.WithToken(string(adminTok)))
	if err != nil {
		return err
	}
	// One enrollment token per ring: the server puts each device in its
	// token's ring, approved.
	ringTok := map[bool]string{}
	for canary, ring := range map[bool]string{true: "canary", false: "broad"} {
		t, err := admin.NewEnrollToken(context.Background(), "bench "+ring, ring, 0, time.Hour)
		if err != nil {
			return err
		}
		ringTok[canary] = t.Token
	}
	tlsCfg, err := pki.ClientTLS(ca, nil, nil)
	if err != nil {
		return err
	}
	metricsClient.http = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 10 * time.Second}
	metricsClient.url, metricsClient.token = url, strings.TrimSpace(string(adminTok))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Enroll the fleet, 32 at a time.
	agents := make([]*agent, n)
	start := time.Now()
	var wg sync.WaitGroup
	var firstErr atomic.Value
	sem := make(chan struct{}, 32)
	for i := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			canary := i*100 < n**canaryShare
			a, err := enroll(ctx, url, ca, ringTok[canary], i, canary)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			agents[i] = a
			a.c.SendInventory(ctx, inventory(buildID, false))
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return fmt.Errorf("enrolling: %w", err)
	}
	enrollTook := time.Since(start)

	// Every agent holds a long-poll; told to apply, it reports it applied.
	for _, a := range agents {
		go a.loop(ctx, buildID)
	}
	if err := waitFor(60*time.Second, func() bool { return longPolls(ctx, admin) >= int64(n) }); err != nil {
		return fmt.Errorf("long-polls: %d of %d held", longPolls(ctx, admin), n)
	}
	held := longPolls(ctx, admin)
	rss := serverRSS(cmd.Process.Pid)

	if _, err := admin.Publish(ctx, data); err != nil {
		return err
	}
	t0 := time.Now()
	ro, err := admin.StartRollout(ctx, api.RolloutRequest{Patch: "bounds-fix", Rings: []string{"canary", "broad"}})
	if err != nil {
		return err
	}
	if err := waitFor(5*time.Minute, func() bool {
		r, err := admin.Rollout(ctx, ro.ID)
		return err == nil && r.State == api.StateDone
	}); err != nil {
		return fmt.Errorf("rollout not done: %w", err)
	}
	done := time.Since(t0)
	var lat []time.Duration
	for _, a := range agents {
		if at := a.received.Load(); at != 0 {
			lat = append(lat, time.Duration(at-t0.UnixNano()))
		}
	}
	if len(lat) != n {
		return fmt.Errorf("%d of %d agents told to apply", len(lat), n)
	}
	slices.Sort(lat)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	fmt.Printf("| %s | %d | %.1f s | %s / %s / %s | %s | %d | %d MiB | %.0f KiB |\n", *dbKind, n, enrollTook.Seconds(),
		ms(lat[n/2]), ms(lat[n*99/100]), ms(lat[n-1]), ms(done), held, rss>>20, float64(rss)/float64(n)/1024)
	return nil
}

func enroll(ctx context.Context, url string, ca []byte, token string, i int, canary bool) (*agent, error) {
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("sim-%05d", i)
	csr, err := pki.CSR(key, name)
	if err != nil {
		return nil, err
	}
	anon, err := client.New(url, ca)
	if err != nil {
		return nil, err
	}
	ring := "broad"
	if canary {
		ring = "canary"
	}
	resp, err := anon.Enroll(ctx, api.EnrollRequest{Token: token, Name: name, Hostname: name, Kernel: "6.18", Labels: map[string]string{"ring": ring}, CSR: string(csr)})
	anon.CloseIdleConnections()
	if err != nil {
		return nil, err
	}
	c, err := client.New(url, ca, client.WithClientCert([]byte(resp.Cert), keyPEM))
	if err != nil {
		return nil, err
	}
	return &agent{c: c, canary: canary}, nil
}

func inventory(buildID string, patched bool) api.Inventory {
	p := api.Process{PID: 4242, Exe: "/usr/sbin/ledger", Modules: []api.Module{{Path: "/usr/sbin/ledger", BuildID: buildID}}}
	if patched {
		p.Patches = []api.Applied{{ID: "bounds-fix", Version: 1, State: "applied"}}
	}
	return api.Inventory{Hostname: "sim", Kernel: "6.18", Processes: []api.Process{p}}
}

func (a *agent) loop(ctx context.Context, buildID string) {
	var cursor int64
	for ctx.Err() == nil {
		r, err := a.c.Sync(ctx, cursor, 30*time.Second)
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		cursor = r.Cursor
		for _, p := range r.Patches {
			if p.Action == api.ActionApply && a.received.Load() == 0 {
				a.received.Store(time.Now().UnixNano())
				a.c.SendInventory(ctx, inventory(buildID, true))
			}
		}
	}
}

// metricsClient reads the server's /metrics with the admin token.
var metricsClient struct {
	http  *http.Client
	url   string
	token string
}

func longPolls(ctx context.Context, _ *client.Client) int64 {
	req, _ := http.NewRequestWithContext(ctx, "GET", metricsClient.url+api.PathMetrics, nil)
	req.Header.Set(api.HeaderAuthorization, "Bearer "+metricsClient.token)
	resp, err := metricsClient.http.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "hotpatch_server_long_polls "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

func serverRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func waitFor(d time.Duration, cond func() bool) error {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return nil
		}
	}
	return errors.New("timed out")
}
