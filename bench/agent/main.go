// Command agent measures hotpatchd: how soon a burst of new processes is
// patched after their exec, how soon a patch file written into the patch
// directory reaches the running processes, and what the agent costs at
// rest with hundreds of processes on the host.
//
//	go run ./bench/agent [-burst 50] [-idle 500] [-for 30s]
//
// It builds hotpatchd, makes a PID namespace (unshare) as the simulated
// host, starts every process in it itself and limits the agent to it, so
// nothing else on the machine is touched. It needs root.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/agent"
	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/procevents"
	"github.com/hotpatch/hotpatch/patch"
)

var (
	burst = flag.Int("burst", 50, "new processes started at once")
	idle  = flag.Int("idle", 500, "processes on the host while the agent is at rest")
	rest  = flag.Duration("for", 30*time.Second, "how long the agent is measured at rest")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run() error {
	if os.Geteuid() != 0 {
		return errors.New("run as root (the agent attaches to processes)")
	}
	dir, err := os.MkdirTemp("", "hotpatch-bench-agent")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The target: the bounds_check fixture, and its patch.
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		return err
	}
	orig, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		return err
	}
	fixed, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		return err
	}
	u, err := builder.Build(orig.Program, fixed.Program, builder.Options{ID: "bounds-fix"})
	if err != nil {
		return err
	}
	key, pub, err := patch.GenerateKey()
	if err != nil {
		return err
	}
	data, err := patch.Sign(u, key)
	if err != nil {
		return err
	}
	// A second patch (the same fix under another id, stacked on the
	// first), written while the agent runs.
	u2, err := builder.Build(orig.Program, fixed.Program, builder.Options{ID: "bounds-fix-2", Version: 2})
	if err != nil {
		return err
	}
	data2, err := patch.Sign(u2, key)
	if err != nil {
		return err
	}
	pem, _ := patch.MarshalPublicKey(pub)
	patches, state := filepath.Join(dir, "patches"), filepath.Join(dir, "state")
	os.MkdirAll(patches, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "k.pub"), pem, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(patches, "bounds.hpatch"), data, 0o644); err != nil {
		return err
	}
	hotpatchd := filepath.Join(dir, "hotpatchd")
	if out, err := exec.Command("go", "build", "-o", hotpatchd, "./cmd/hotpatchd").CombinedOutput(); err != nil {
		return fmt.Errorf("building hotpatchd: %v\n%s", err, out)
	}

	// The simulated host.
	ns := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "sleep", "infinity")
	if err := ns.Start(); err != nil {
		return err
	}
	initPID, err := childOf(ns.Process.Pid)
	if err != nil {
		return err
	}
	defer func() {
		syscall.Kill(initPID, syscall.SIGKILL) // ends every process of the namespace
		ns.Process.Kill()
		ns.Wait()
	}()
	inHost := func(script string) (*exec.Cmd, error) {
		c := exec.Command("nsenter", "--target", strconv.Itoa(initPID), "--pid", "--mount", "--", "sh", "-c", script)
		return c, c.Start()
	}

	// Exec times straight from the kernel, to measure from.
	l, err := procevents.Listen()
	if err != nil {
		return err
	}
	defer l.Close()
	execAt := map[int]time.Duration{}
	go func() {
		for {
			evs, err := l.Read()
			if err != nil && !errors.Is(err, procevents.ErrOverrun) {
				return
			}
			for _, e := range evs {
				if e.Kind == procevents.Exec && e.PID == e.TGID {
					if exe, _ := os.Readlink("/proc/" + strconv.Itoa(e.PID) + "/exe"); exe == orig.Program {
						mu.Lock()
						execAt[e.PID] = e.Time
						mu.Unlock()
					}
				}
			}
		}
	}()

	d := exec.Command(hotpatchd, "--patch-dir", patches, "--state", state, "--trust", filepath.Join(dir, "k.pub"),
		"--pid-namespace", fmt.Sprintf("/proc/%d/ns/pid", initPID), "--quiet")
	if err := d.Start(); err != nil {
		return err
	}
	defer func() { d.Process.Signal(syscall.SIGTERM); d.Wait() }()
	if err := waitFor(10*time.Second, func() bool { return count(state, "started") > 0 }); err != nil {
		return err
	}

	// A burst of new processes; each stays alive on a pipe from sleep.
	script := fmt.Sprintf("for i in $(seq %d); do sleep 100000 | %s & done; wait", *burst, orig.Program)
	if _, err := inHost(script); err != nil {
		return err
	}
	if err := waitFor(60*time.Second, func() bool { return count(state, "applied") >= *burst }); err != nil {
		return fmt.Errorf("burst: %d of %d applied: %v", count(state, "applied"), *burst, err)
	}
	time.Sleep(100 * time.Millisecond)
	var lat []time.Duration
	offset := monoOffset()
	mu.Lock()
	agent.ReadEvents(context.Background(), state, false, func(e agent.Event) error {
		if e.Type == "applied" {
			if at, ok := execAt[e.PID]; ok {
				lat = append(lat, time.Duration(e.Time.UnixNano()-offset)-at)
			}
		}
		return nil
	})
	mu.Unlock()
	if len(lat) == 0 {
		return errors.New("no exec time matched an applied event")
	}
	slices.Sort(lat)
	fmt.Printf("| exec to patched, burst of %d (%d measured) | p50 %v | p99 %v | max %v |\n", *burst, len(lat),
		lat[len(lat)/2].Round(time.Millisecond/10), lat[len(lat)*99/100].Round(time.Millisecond/10), lat[len(lat)-1].Round(time.Millisecond/10))

	// A new patch file: from its rename into the patch directory to its
	// apply in each running process.
	tmp := filepath.Join(patches, ".bounds-2.tmp")
	if err := os.WriteFile(tmp, data2, 0o644); err != nil {
		return err
	}
	written := time.Now()
	if err := os.Rename(tmp, filepath.Join(patches, "bounds-2.hpatch")); err != nil {
		return err
	}
	if err := waitFor(60*time.Second, func() bool { return countPatch(state, "applied", "bounds-fix-2") >= *burst }); err != nil {
		return fmt.Errorf("new file: %d of %d applied: %v", countPatch(state, "applied", "bounds-fix-2"), *burst, err)
	}
	var fileLat []time.Duration
	agent.ReadEvents(context.Background(), state, false, func(e agent.Event) error {
		if e.Type == "applied" && e.Patch == "bounds-fix-2" {
			fileLat = append(fileLat, e.Time.Sub(written))
		}
		return nil
	})
	slices.Sort(fileLat)
	fmt.Printf("| new patch file to patched, %d running processes | first %v | p50 %v | p99 %v | max %v |\n", len(fileLat),
		fileLat[0].Round(time.Millisecond/10), fileLat[len(fileLat)/2].Round(time.Millisecond/10), fileLat[len(fileLat)*99/100].Round(time.Millisecond/10), fileLat[len(fileLat)-1].Round(time.Millisecond/10))

	// At rest with many processes: the burst's, plus idle ones that do not
	// map the target.
	if _, err := inHost(fmt.Sprintf("for i in $(seq %d); do sleep 100000 & done; wait", *idle-*burst)); err != nil {
		return err
	}
	if err := waitFor(30*time.Second, func() bool { return procsIn(initPID) >= *idle }); err != nil {
		return fmt.Errorf("starting %d idle processes: %v", *idle, err)
	}
	time.Sleep(2 * time.Second) // let the agent see them
	cpu0, t0 := cpuTime(d.Process.Pid), time.Now()
	time.Sleep(*rest)
	cpu1, t1 := cpuTime(d.Process.Pid), time.Now()
	fmt.Printf("| at rest, %d processes on the host, %v | CPU %.2f%% of one core | RSS %s |\n",
		procsIn(initPID), *rest, 100*(cpu1-cpu0).Seconds()/t1.Sub(t0).Seconds(), rss(d.Process.Pid))
	return nil
}

// mu guards the exec times, written by the event reader.
var mu sync.Mutex

// monoOffset is wall clock minus CLOCK_MONOTONIC, in nanoseconds.
func monoOffset() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Now().UnixNano() - ts.Nano()
}

func count(state, typ string) int {
	n := 0
	agent.ReadEvents(context.Background(), state, false, func(e agent.Event) error {
		if e.Type == typ {
			n++
		}
		return nil
	})
	return n
}

func countPatch(state, typ, id string) int {
	n := 0
	agent.ReadEvents(context.Background(), state, false, func(e agent.Event) error {
		if e.Type == typ && e.Patch == id {
			n++
		}
		return nil
	})
	return n
}

func waitFor(d time.Duration, cond func() bool) error {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return nil
		}
	}
	return errors.New("timed out")
}

func childOf(pid int) (int, error) {
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
	}
	return 0, fmt.Errorf("process %d has no child", pid)
}

// procsIn counts the processes of the namespace whose first process is
// init (as this program sees them).
func procsIn(init int) int {
	want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if ns, _ := os.Readlink("/proc/" + e.Name() + "/ns/pid"); ns == want {
			n++
		}
	}
	return n
}

// cpuTime is the user and system time pid has used.
func cpuTime(pid int) time.Duration {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func rss(pid int) string {
	f, _ := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}
