package procevents

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// deadline bounds every wait on the kernel, so that no test can hang.
const deadline = 10 * time.Second

// listen subscribes for the test; the listener is closed at cleanup or at
// the deadline, whichever comes first, which ends any Read.
func listen(t *testing.T) *Listener {
	t.Helper()
	l, err := Listen()
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("Listen: %v", err)
	}
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	timer := time.AfterFunc(deadline, func() { l.Close() })
	t.Cleanup(func() {
		timer.Stop()
		l.Close()
	})
	return l
}

// start starts a command the test owns; it is killed (if still running)
// and reaped at cleanup.
func start(t *testing.T, name string, args ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = t.TempDir() // any core file lands here
	out := new(strings.Builder)
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() // a pidfd on Linux: never another process
		cmd.Wait()
	})
	return cmd, out
}

// collect reads events until done returns true for one, and returns the
// events for which keep returned true, in order (the done event included).
func collect(t *testing.T, l *Listener, keep, done func(Event) bool) []Event {
	t.Helper()
	var kept []Event
	for {
		evs, err := l.Read()
		if errors.Is(err, ErrOverrun) {
			t.Logf("Read: %v (carrying on; the test may time out)", err)
			continue
		}
		if err != nil {
			t.Fatalf("Read: %v; after %v (deadline %v)", err, kept, deadline)
		}
		for _, e := range evs {
			if keep(e) {
				kept = append(kept, e)
			}
			if done(e) {
				return kept
			}
		}
	}
}

func find(evs []Event, k Kind) (Event, int) {
	for i, e := range evs {
		if e.Kind == k {
			return e, i
		}
	}
	return Event{}, -1
}

func TestExecExit(t *testing.T) {
	t.Parallel()
	l := listen(t)
	cmd, _ := start(t, "/bin/true")
	pid := cmd.Process.Pid
	evs := collect(t, l,
		func(e Event) bool { return e.TGID == pid },
		func(e Event) bool { return e.Kind == Exit && e.PID == pid })
	if err := cmd.Wait(); err != nil {
		t.Fatalf("/bin/true: %v", err)
	}
	fork, fi := find(evs, Fork)
	exe, ei := find(evs, Exec)
	exit, xi := find(evs, Exit)
	if fi < 0 || ei < 0 || !(fi < ei && ei < xi) {
		t.Fatalf("want fork, exec, exit of %d in that order; got %v", pid, evs)
	}
	if fork.PID != pid || fork.ParentTGID != os.Getpid() {
		t.Errorf("fork = %+v, want child %d of %d", fork, pid, os.Getpid())
	}
	if exe.PID != pid || exe.TGID != pid {
		t.Errorf("exec = %+v, want pid and tgid %d", exe, pid)
	}
	if status, ok := exit.ExitStatus(); !ok || status != 0 || exit.ExitCode != 0 {
		t.Errorf("exit = %v (code %#x), want status 0", exit, exit.ExitCode)
	}
	if sig, _ := exit.Signal(); sig != 0 {
		t.Errorf("exit.Signal() = %v, want 0", sig)
	}
	if exit.ExitSignal != uint32(syscall.SIGCHLD) {
		t.Errorf("exit.ExitSignal = %d, want SIGCHLD", exit.ExitSignal)
	}
	if exit.ParentTGID != os.Getpid() {
		t.Errorf("exit.ParentTGID = %d, want %d", exit.ParentTGID, os.Getpid())
	}
	if !(fork.Time <= exe.Time && exe.Time <= exit.Time) || exit.Time <= 0 {
		t.Errorf("times not in order: fork %v, exec %v, exit %v", fork.Time, exe.Time, exit.Time)
	}
}

func TestExitBySignal(t *testing.T) {
	t.Parallel()
	l := listen(t)
	cmd, _ := start(t, "/bin/sh", "-c", "ulimit -c 0; kill -SEGV $$")
	pid := cmd.Process.Pid
	evs := collect(t, l,
		func(e Event) bool { return e.TGID == pid },
		func(e Event) bool { return e.Kind == Exit && e.PID == pid })
	cmd.Wait()
	exit := evs[len(evs)-1]
	sig, core := exit.Signal()
	if sig != syscall.SIGSEGV {
		t.Fatalf("exit %v: Signal() = %v, want SIGSEGV", exit, sig)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signal() != sig || ws.CoreDump() != core {
		t.Errorf("Signal() = %v, %t; wait(2) says %v, %t", sig, core, ws.Signal(), ws.CoreDump())
	}
	if _, ok := exit.ExitStatus(); ok {
		t.Errorf("ExitStatus() ok for a process killed by a signal")
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	t.Parallel()
	l := listen(t)
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := l.Read(); err != nil && !errors.Is(err, ErrOverrun) {
				done <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond) // let Read block (or not: either must work)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(deadline):
		t.Fatal("Read still blocked after Close")
	}
	if _, err := l.Read(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Read after Close: %v, want os.ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestChildPIDNamespace records what the events say about a process in a
// child PID namespace: its initial-namespace PID, not the 1 it sees.
func TestChildPIDNamespace(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	l := listen(t)
	cmd, out := start(t, "unshare", "--pid", "--kill-child", "/bin/sh", "-c", "echo $$; exec /bin/true")
	upid := cmd.Process.Pid
	child := 0
	evs := collect(t, l,
		func(e Event) bool { return e.TGID == upid || e.ParentTGID == upid || child != 0 && e.TGID == child },
		func(e Event) bool {
			if e.Kind == Fork && e.ParentTGID == upid && e.PID == e.TGID {
				child = e.PID
			}
			return e.Kind == Exit && e.PID == upid
		})
	if err := cmd.Wait(); err != nil {
		t.Skipf("unshare --pid: %v (no permission to create PID namespaces here?)", err)
	}
	saw, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("child printed %q", out.String())
	}
	var execs []int
	for _, e := range evs {
		if e.Kind == Exec && e.TGID == child {
			execs = append(execs, e.PID)
		}
	}
	if saw != 1 || child == 0 || child == 1 || len(execs) != 2 || execs[0] != child {
		t.Fatalf("child saw pid %d; fork event gave %d; exec events of it: %v; all: %v", saw, child, execs, evs)
	}
	t.Logf("child in a new PID namespace saw pid %d; its fork and 2 exec events carried pid %d", saw, child)
}

const helperEnv = "HOTPATCH_PROCEVENTS_HELPER"

// TestHelperListen is run by TestListenInOtherNamespaces in a new
// namespace: it prints what Listen returned.
func TestHelperListen(t *testing.T) {
	if os.Getenv(helperEnv) != "listen" {
		t.Skip("run by TestListenInOtherNamespaces")
	}
	l, err := Listen()
	if err == nil {
		l.Close()
	}
	fmt.Printf("Listen: %v\n", err)
}

// TestListenInOtherNamespaces checks that Listen fails with a clear
// error where the kernel would never deliver an event, instead of
// returning a listener that stays silent. Outside the initial PID and user
// namespaces, kernels differ in how they say no: some ignore the
// subscription (no acknowledgement), others refuse it (EPERM: no
// CAP_NET_ADMIN in the initial user namespace). Either is a clear refusal
// (the agent then works from rescans, TestAgentWithoutProcessEvents);
// what must never happen is a listener.
func TestListenInOtherNamespaces(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	const (
		ignored = "Listen: procevents: the kernel ignored the subscription"
		refused = "Listen: procevents: process events need CAP_NET_ADMIN"
		noConn  = "Listen: procevents: no process connector in this network namespace"
	)
	tests := []struct {
		ns   string
		args []string
		want []string // the answer starts with one of these
	}{
		{"pid", []string{"--pid", "--kill-child"}, []string{ignored, refused}},
		{"user", []string{"--user", "--map-root-user"}, []string{ignored, refused}},
		{"net", []string{"--net"}, []string{noConn}},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			args := append(append([]string{}, tt.args...), os.Args[0], "-test.run=^TestHelperListen$", "-test.count=1")
			cmd := exec.CommandContext(ctx, "unshare", args...)
			cmd.Env = append(os.Environ(), helperEnv+"=listen")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Skipf("unshare %s: %v: %s", strings.Join(tt.args, " "), err, out)
			}
			line, _, _ := strings.Cut(string(out), "\n")
			ok := false
			for _, w := range tt.want {
				ok = ok || strings.HasPrefix(line, w)
			}
			if !ok {
				t.Fatalf("Listen in a new %s namespace:\n%s\nwant an error starting with one of %q", tt.ns, out, tt.want)
			}
			// One line that says what to do.
			if !strings.Contains(line, "hotpatchd") {
				t.Errorf("the error %q does not say how to run hotpatchd", line)
			}
			t.Logf("in a new %s namespace: %s", tt.ns, line)
		})
	}
}

// TestOverrun shrinks the receive buffer, lets a burst of processes
// overflow it, and checks that Read reports the loss and then goes on.
func TestOverrun(t *testing.T) {
	t.Parallel()
	l := listen(t)
	setRcvbuf := func(opt, size int) {
		l.rc.Control(func(fd uintptr) {
			if err := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, size); err != nil {
				t.Fatalf("set the receive buffer to %d: %v", size, err)
			}
		})
	}
	setRcvbuf(syscall.SO_RCVBUF, 0) // the minimum: a few datagrams
	burst, _ := start(t, "/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done")
	if err := burst.Wait(); err != nil {
		t.Fatalf("burst: %v", err)
	}
	var before int
	for {
		evs, err := l.Read()
		if errors.Is(err, ErrOverrun) {
			if !errors.Is(err, syscall.ENOBUFS) {
				t.Errorf("overrun error %q does not wrap ENOBUFS", err)
			}
			t.Logf("%d events, then: %v", before, err)
			break
		}
		if err != nil {
			t.Fatalf("Read: %v (no overrun reported after %d events)", err, before)
		}
		before += len(evs)
	}
	setRcvbuf(syscall.SO_RCVBUFFORCE, rcvbuf)
	cmd, _ := start(t, "/bin/true")
	pid := cmd.Process.Pid
	collect(t, l, func(Event) bool { return false }, func(e Event) bool { return e.Kind == Exec && e.PID == pid })
}
