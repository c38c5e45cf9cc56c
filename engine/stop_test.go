package engine

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
)

func stopme(t testing.TB, threads int, env ...string) *fixture.Proc {
	t.Helper()
	bin, err := fixture.Compile("engine-stopme", []string{"testdata/stopme.c"}, "-O2", "-pthread")
	if err != nil {
		t.Fatal(err)
	}
	p := fixture.Start(t, bin, append([]string{"STOPME_THREADS=" + strconv.Itoa(threads)}, env...)...)
	if got, err := p.Probe("ping"); err != nil || got != "pong 1" {
		t.Fatalf("first ping: %q, %v", got, err)
	}
	return p
}

func probeNumber(t testing.TB, p *fixture.Proc, cmd string) uint64 {
	t.Helper()
	out, err := p.Probe(cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	f := strings.Fields(out)
	n, err := strconv.ParseUint(f[len(f)-1], 10, 64)
	if err != nil {
		t.Fatalf("%s: reply %q", cmd, out)
	}
	return n
}

// threadState returns the state letter of a thread from /proc.
func threadState(pid, tid int) byte {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0
	}
	return s[i+2]
}

// TestStopWorld stops every thread of processes with 1 to 64 threads,
// makes a remote mmap/munmap while they are stopped, and lets them go. The
// threads blocked in read() (main included, in fgets) must not see EINTR:
// glibc's fgets would return NULL and the program would exit.
func TestStopWorld(t *testing.T) {
	for _, n := range []int{0, 7, 63} {
		t.Run(fmt.Sprintf("%d-threads", n+1), func(t *testing.T) {
			t.Parallel()
			p := stopme(t, n)
			pid := p.Pid()
			spins := probeNumber(t, p, "spins")
			for round := 0; round < 10; round++ {
				w, err := stopWorld(pid)
				if err != nil {
					t.Fatal(err)
				}
				if len(w.threads) != n+1 {
					t.Errorf("stopped %d threads, want %d", len(w.threads), n+1)
				}
				for _, tid := range w.tids() {
					if st := threadState(pid, tid); st != 't' {
						t.Errorf("thread %d in state %q, want 't' (traced)", tid, st)
					}
				}
				w.release()
				addr, err := remoteMmapMunmap(pid)
				if err != nil {
					t.Fatalf("remote syscalls: %v", err)
				}
				if addr == 0 {
					t.Fatal("remote mmap returned 0")
				}
			}
			if e := probeNumber(t, p, "eintr"); e != 0 {
				t.Errorf("blocked reads saw EINTR %d times", e)
			}
			if got := probeNumber(t, p, "ping"); got != 2 {
				t.Errorf("ping count %d after the stops, want 2 (same process, same state)", got)
			}
			if n > 0 {
				if s := probeNumber(t, p, "spins"); s <= spins {
					t.Errorf("spinning threads did not run on after the stops: %d -> %d", spins, s)
				}
			}
		})
	}
}

// remoteMmapMunmap maps a page in the process through a session, writes
// and reads it back, unmaps it, and checks that the trampoline's slack is
// back to the file's bytes afterwards.
func remoteMmapMunmap(pid int) (uint64, error) {
	tg, err := openTarget(pid)
	if err != nil {
		return 0, err
	}
	defer tg.close()
	var addr uint64
	err = tg.withSyscalls(func(s *session) error {
		addr, err = s.syscall(unix.SYS_MMAP, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			return err
		}
		if err := tg.mem.Poke([]byte("hotpatch"), addr); err != nil {
			return err
		}
		buf := make([]byte, 8)
		if err := tg.mem.Peek(buf, addr); err != nil || string(buf) != "hotpatch" {
			return fmt.Errorf("read back %q, %v", buf, err)
		}
		_, err = s.syscall(unix.SYS_MUNMAP, addr, 8192)
		return err
	})
	if err != nil {
		return 0, err
	}
	for _, a := range tg.slackAreas() {
		cur := make([]byte, a.size)
		if err := tg.mem.Peek(cur, a.addr); err != nil {
			return 0, err
		}
		if string(cur) != string(a.file) {
			return 0, fmt.Errorf("slack at %#x not put back", a.addr)
		}
	}
	return addr, nil
}

// noSuchPid is above the kernel's PID_MAX_LIMIT (4M): no process can have
// it, so a test that needs a missing process never risks touching a
// recycled pid of someone else's.
const noSuchPid = 1<<22 + 1

// TestStopWorldGone refuses a pid that does not exist with ErrNoProcess.
func TestStopWorldGone(t *testing.T) {
	if _, err := stopWorld(noSuchPid); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("stopWorld on a missing process: %v, want ErrNoProcess", err)
	}
}

// TestWaitEndsWhenKilled kills a process while the engine holds every
// thread of it stopped, then waits for its main thread, as a remote call
// or a stop does: the wait must end (the kernel never reports a main
// thread's exit while other threads of it wait, as zombies, for this very
// tracer to reap them), and once the world is released the process is
// reaped. The same with the main thread alone stopped, as in a remote
// call's session.
func TestWaitEndsWhenKilled(t *testing.T) {
	for _, wait := range []string{"remote", "remote-deadline", "stop", "session"} {
		t.Run(wait, func(t *testing.T) {
			p := stopme(t, 4)
			pid := p.Pid()
			var only []int
			if wait == "session" {
				only = []int{pid}
			}
			w, err := stopThreads(pid, only)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Kill(pid, unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() {
				waited <- w.tr.do(func() error {
					switch wait {
					case "remote":
						_, err := waitThread(pid, len(w.threads) == 1, time.Time{})
						return err
					case "remote-deadline":
						_, err := waitThread(pid, len(w.threads) == 1, time.Now().Add(time.Hour))
						return err
					case "session":
						ws, err := waitThread(pid, len(w.threads) == 1, time.Time{})
						if err == nil && (ws.Exited() || ws.Signaled()) {
							err = errThreadGone
						}
						return err
					}
					return waitStop(w.threads[pid], len(w.threads) == 1, nil)
				})
			}()
			err = testutil.Receive(t, waited, time.Minute, "waiting for the main thread of a killed process did not end")
			if !errors.Is(err, errThreadGone) {
				t.Errorf("wait for the killed main thread: %v, want errThreadGone", err)
			}
			released := make(chan struct{})
			go func() { w.release(); close(released) }()
			testutil.Receive(t, released, time.Minute, "release of a killed process did not end")
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRemoteCall calls functions of the C library in a running process the
// way IFUNC resolvers are called: getpid returns the process's pid; pause,
// which never returns, is abandoned after its deadline and the process runs
// on as before (its blocked read restarts, no EINTR).
func TestRemoteCall(t *testing.T) {
	p := stopme(t, 2)
	pid := p.Pid()
	tg, err := openTarget(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	res := newResolver(pid, tg.mods, tg.maps)
	addr := func(name string) uint64 {
		a, _, err := res.lookup(name, "", Module{})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	var got uint64
	err = tg.withSyscalls(func(s *session) error {
		var err error
		got, err = s.call(addr("getpid"))
		return err
	})
	if err != nil || got != uint64(pid) {
		t.Fatalf("remote getpid() = %d, %v; want %d", got, err, pid)
	}
	err = tg.withSyscalls(func(s *session) error {
		_, err := s.call(addr("pause"))
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("remote pause(): %v, want a time-out", err)
	}
	if e := probeNumber(t, p, "eintr"); e != 0 {
		t.Errorf("blocked reads saw EINTR %d times", e)
	}
	if got := probeNumber(t, p, "ping"); got != 2 {
		t.Errorf("ping count %d, want 2", got)
	}
	checkNoLeftovers(t, pid)
}

// TestHoldGC: overlapping critical sections (the agent patches several
// processes at once) leave garbage collection as it was when the last one
// ends, whatever the order they end in.
func TestHoldGC(t *testing.T) {
	before := debug.SetGCPercent(77)
	defer debug.SetGCPercent(before)
	a := holdGC()
	b := holdGC()
	a()
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Errorf("GC back on (%d) while a section is still held", p)
	}
	b()
	if p := debug.SetGCPercent(77); p != 77 {
		t.Errorf("after both sections GC percent is %d, want 77", p)
	}
}
