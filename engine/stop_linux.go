//go:build linux && amd64

package engine

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// world is a process with every thread seized and stopped. Every path that
// creates one must end in resume or detach; if hotpatch itself dies, the
// kernel detaches the threads and they run on.
type world struct {
	pid     int
	tr      *tracer
	threads map[int]*thread
	// paused is when the first thread was asked to stop; the pause lasts
	// until the last one is let go.
	paused time.Time
	// dead are traced threads that died without being reaped; release
	// reaps them (see reapDead).
	dead []int
}

// newWorld returns a world of pid with no thread stopped yet, and its
// tracer thread.
func newWorld(pid int) *world {
	return &world{pid: pid, tr: newTracer(), threads: map[int]*thread{}}
}

// critical runs fn on the tracer thread as the part of the work during
// which threads are stopped: the tracer thread at real-time priority, so
// that neither this process's other threads nor other programs delay it,
// and no garbage collection, whose work would compete with it for the CPU
// on a small machine (disabling waits for a collection in progress to
// finish). Both are best effort.
func (w *world) critical(fn func() error) error {
	defer holdGC()()
	return w.tr.do(func() error {
		if unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 1}, 0) == nil {
			defer unix.SchedSetAttr(0, &unix.SchedAttr{Policy: 0 /* SCHED_OTHER */}, 0)
		}
		return fn()
	})
}

// gcHold counts the critical sections in progress (the agent runs several
// at once, on different processes): garbage collection is off while any
// is, and the setting from before the first comes back after the last.
var gcHold struct {
	sync.Mutex
	n       int
	percent int
}

// holdGC turns garbage collection off until the returned function is
// called.
func holdGC() (release func()) {
	gcHold.Lock()
	if gcHold.n == 0 {
		gcHold.percent = debug.SetGCPercent(-1)
	}
	gcHold.n++
	gcHold.Unlock()
	return func() {
		gcHold.Lock()
		if gcHold.n--; gcHold.n == 0 {
			debug.SetGCPercent(gcHold.percent)
		}
		gcHold.Unlock()
	}
}

// stopWorld seizes and stops every thread of pid, including threads that
// are created while it works.
func stopWorld(pid int) (*world, error) { return stopThreads(pid, nil) }

// stopThreads seizes and stops the given threads of pid, or all of them
// (and those created meanwhile) when only is nil.
func stopThreads(pid int, only []int) (*world, error) {
	w := newWorld(pid)
	if err := w.stop(only); err != nil {
		w.release()
		return nil, err
	}
	return w, nil
}

// stop seizes and stops the given threads, or all threads (and those
// created meanwhile) when only is nil, adding them to the world; threads
// it already holds are left as they are.
func (w *world) stop(only []int) error {
	return w.tr.do(func() error { return w.stopLocked(only) })
}

// stopLocked is stop, on the tracer thread. Threads seized beforehand
// (seizeLocked) are only interrupted: the pause starts with the first
// interrupt, not with the slower attaching.
func (w *world) stopLocked(only []int) error {
	pid := w.pid
	for round := 0; ; round++ {
		tids := only
		if tids == nil {
			var err error
			if tids, err = threads(pid); err != nil {
				return err
			}
		}
		var fresh []*thread
		for _, th := range w.threads {
			if !th.stopped {
				fresh = append(fresh, th)
			}
		}
		if err := w.seizeLocked(tids); err != nil {
			return err
		}
		for _, th := range w.threads {
			if !th.stopped && !slices.Contains(fresh, th) {
				fresh = append(fresh, th)
			}
		}
		if len(fresh) == 0 {
			if len(w.threads) == 0 {
				return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
			}
			return nil
		}
		if w.paused.IsZero() {
			w.paused = time.Now()
		}
		for _, th := range fresh {
			if err := unix.PtraceInterrupt(th.tid); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("stopping thread %d: %w", th.tid, err)
			}
		}
		// The main thread last: waiting for it polls while other
		// threads are traced (see waitTracee), and by then it has
		// stopped.
		slices.SortStableFunc(fresh, func(a, b *thread) int {
			switch {
			case a.leader == b.leader:
				return 0
			case a.leader:
				return 1
			}
			return -1
		})
		for _, th := range fresh {
			// A thread cloned meanwhile is auto-attached by
			// PTRACE_O_TRACECLONE; the next round collects it.
			err := waitStop(th, len(w.threads) == 1, nil)
			if errors.Is(err, errThreadGone) {
				w.dead = append(w.dead, th.tid)
				delete(w.threads, th.tid)
				continue
			}
			if err != nil {
				return err
			}
		}
		if round > 1000 {
			return fmt.Errorf("process %d keeps creating threads; cannot stop it", pid)
		}
	}
}

// seizeLocked attaches to the given threads without stopping them. On the
// tracer thread.
func (w *world) seizeLocked(tids []int) error {
	for _, tid := range tids {
		if _, ok := w.threads[tid]; ok {
			continue
		}
		if err := ptraceSeize(tid); err != nil {
			if errors.Is(err, unix.ESRCH) {
				continue // exited meanwhile
			}
			if errors.Is(err, unix.EPERM) {
				tr := tracerOf(w.pid, tid)
				if tr == os.Getpid() && len(w.threads) > 0 {
					// Already ours: auto-attached as a clone child.
					w.threads[tid] = &thread{tid: tid, leader: tid == w.pid}
					continue
				}
				if tr <= 0 && taskExiting(w.pid, tid) {
					continue // exiting: it will not run the code
				}
			}
			return fmt.Errorf("attaching to thread %d of process %d: %w%s", tid, w.pid, err, tracedBy(w.pid, tid))
		}
		w.threads[tid] = &thread{tid: tid, leader: tid == w.pid}
	}
	return nil
}

// tracedBy explains an attach refused because someone else traces the
// thread (another hotpatch at work, or a debugger).
func tracedBy(pid, tid int) string {
	if tr := tracerOf(pid, tid); tr > 0 {
		return fmt.Sprintf(" (it is traced by process %d: another hotpatch at work, or a debugger)", tr)
	}
	return ""
}

// processOf returns the process (thread group) of thread tid: TracerPid
// names the tracing thread, which in a multi-threaded tracer (any Go
// program) is often not its main thread. tid itself when unknown.
func processOf(tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return tid
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				return n
			}
		}
	}
	return tid
}

// taskExiting reports whether thread tid of pid is gone or a zombie.
func taskExiting(pid, tid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// tracerOf returns the process tracing thread tid of pid, 0 for none, -1
// when unknown. TracerPid in the thread's status names the tracing
// thread; its process is what a message names and what "ours" means (our
// tracer thread is seldom our main thread).
func tracerOf(pid, tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return -1
			}
			if n > 0 {
				n = processOf(n)
			}
			return n
		}
	}
	return -1
}

// tids returns the stopped threads in ascending order (the leader first).
func (w *world) tids() []int {
	out := make([]int, 0, len(w.threads))
	for tid := range w.threads {
		out = append(out, tid)
	}
	sort.Ints(out)
	return out
}

// detachExcept lets every thread but keep go on and forgets it; keep stays
// stopped and traced.
// On the tracer thread.
func (w *world) detachExcept(keep int) {
	for tid, th := range w.threads {
		if tid == keep {
			continue
		}
		w.detach(th)
		delete(w.threads, tid)
	}
	w.paused = time.Time{}
}

// detach resumes one thread, handing back a signal that arrived while it
// was stopped. On the tracer thread.
func (w *world) detach(th *thread) {
	if !th.stopped {
		// Seized but never seen stopped: interrupt and wait, so detach
		// (which needs a stopped tracee) works.
		unix.PtraceInterrupt(th.tid)
		if err := waitStop(th, len(w.threads) == 1, nil); err != nil {
			if errors.Is(err, errThreadGone) {
				w.dead = append(w.dead, th.tid)
			}
			return
		}
	}
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(th.tid), 0, uintptr(th.pending), 0, 0); e == unix.ESRCH {
		w.dead = append(w.dead, th.tid) // died meanwhile
	}
}

// release detaches from every thread, handing back any signal that arrived
// while they were stopped, and ends the tracer. It is the only way out.
func (w *world) release() time.Duration {
	var pause time.Duration
	w.tr.do(func() error {
		pause = w.releaseLocked()
		return nil
	})
	w.tr.close()
	return pause
}

// releaseLocked detaches from every thread, on the tracer thread, and
// returns how long the world was stopped: from the first stop request to
// the last thread let go. The tracer stays for the caller to close.
func (w *world) releaseLocked() time.Duration {
	// The main thread last (see waitTracee).
	tids := w.tids()
	slices.SortStableFunc(tids, func(a, b int) int {
		switch {
		case (a == w.pid) == (b == w.pid):
			return 0
		case a == w.pid:
			return 1
		}
		return -1
	})
	for _, tid := range tids {
		// Detaching resumes the thread and delivers the signal that
		// arrived while it was stopped, if any.
		w.detach(w.threads[tid])
		delete(w.threads, tid)
	}
	w.reapDead()
	var pause time.Duration
	if !w.paused.IsZero() {
		pause = time.Since(w.paused)
		w.paused = time.Time{}
	}
	return pause
}

// reapDead collects the traced threads that died (zombies, which
// PTRACE_DETACH cannot let go), the main thread last. Left traced, they
// would keep the process unreaped by its parent until this tracer thread
// exits, and when the tracer runs on the program's first OS thread it never
// does (Go parks that thread instead of ending it). A main thread is
// reported to its tracer only once every other thread is reaped: it is
// waited for a moment.
func (w *world) reapDead() {
	slices.SortStableFunc(w.dead, func(a, b int) int {
		switch {
		case (a == w.pid) == (b == w.pid):
			return 0
		case a == w.pid:
			return 1
		}
		return -1
	})
	for _, tid := range w.dead {
		for end := time.Now().Add(time.Second); ; {
			var ws unix.WaitStatus
			n, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
			if n == tid || err != nil {
				break // reaped, or not ours any more
			}
			if st := threadStateOf(tid); (st != 'Z' && st != 'X') || time.Now().After(end) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	w.dead = nil
}
