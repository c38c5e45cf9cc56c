//go:build linux && amd64

package engine

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
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
	// Paused is when the last thread stopped; the pause lasts until resume.
	paused time.Time
}

// stopWorld seizes and stops every thread of pid, including threads that
// are created while it works.
func stopWorld(pid int) (*world, error) { return stopThreads(pid, nil) }

// stopThreads seizes and stops the given threads of pid, or all of them
// (and those created meanwhile) when only is nil.
func stopThreads(pid int, only []int) (*world, error) {
	w := &world{pid: pid, tr: newTracer(), threads: map[int]*thread{}}
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
	pid := w.pid
	return w.tr.do(func() error {
		for round := 0; ; round++ {
			tids := only
			if tids == nil {
				var err error
				if tids, err = threads(pid); err != nil {
					return err
				}
			}
			var fresh []*thread
			for _, tid := range tids {
				if _, ok := w.threads[tid]; ok {
					continue
				}
				th := &thread{tid: tid}
				if err := ptraceSeize(tid); err != nil {
					if errors.Is(err, unix.ESRCH) {
						continue // exited meanwhile
					}
					if errors.Is(err, unix.EPERM) && round > 0 {
						// Already ours: auto-attached as a clone child.
						w.threads[tid] = th
						fresh = append(fresh, th)
						continue
					}
					return fmt.Errorf("attaching to thread %d of process %d: %w%s", tid, pid, err, tracedBy(pid, tid))
				}
				if err := unix.PtraceInterrupt(tid); err != nil && !errors.Is(err, unix.ESRCH) {
					return fmt.Errorf("stopping thread %d: %w", tid, err)
				}
				w.threads[tid] = th
				fresh = append(fresh, th)
			}
			if len(fresh) == 0 {
				if len(w.threads) == 0 {
					return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
				}
				w.paused = time.Now()
				return nil
			}
			for _, th := range fresh {
				// A thread cloned meanwhile is auto-attached by
				// PTRACE_O_TRACECLONE; the next round collects it.
				err := waitStop(th, nil)
				if errors.Is(err, errThreadGone) {
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
	})
}

// tracedBy explains an attach refused because someone else traces the
// thread (another hotpatch at work, or a debugger).
func tracedBy(pid, tid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			if v = strings.TrimSpace(v); v != "0" {
				return " (it is traced by process " + v + ": another hotpatch at work, or a debugger)"
			}
		}
	}
	return ""
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
func (w *world) detachExcept(keep int) {
	w.tr.do(func() error {
		for tid, th := range w.threads {
			if tid == keep {
				continue
			}
			w.detach(th)
			delete(w.threads, tid)
		}
		return nil
	})
}

// detach resumes one thread, handing back a signal that arrived while it
// was stopped. On the tracer thread.
func (w *world) detach(th *thread) {
	if !th.stopped {
		// Seized but never seen stopped: interrupt and wait, so detach
		// (which needs a stopped tracee) works.
		unix.PtraceInterrupt(th.tid)
		if err := waitStop(th, nil); err != nil {
			return
		}
	}
	unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(th.tid), 0, uintptr(th.pending), 0, 0)
}

// release detaches from every thread, handing back any signal that arrived
// while they were stopped, and ends the tracer. It is the only way out.
func (w *world) release() time.Duration {
	var pause time.Duration
	w.tr.do(func() error {
		if !w.paused.IsZero() {
			pause = time.Since(w.paused)
		}
		for _, th := range w.threads {
			// Detaching resumes the thread and delivers the signal that
			// arrived while it was stopped, if any.
			w.detach(th)
		}
		return nil
	})
	w.tr.close()
	return pause
}
