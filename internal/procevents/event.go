package procevents

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// ErrOverrun is wrapped by the error of Read when events were lost: the
// kernel dropped some because the receive queue was full (ENOBUFS), or a
// message from the kernel could not be decoded. The caller must rescan
// /proc; the Listener keeps working.
var ErrOverrun = errors.New("process events were lost; rescan /proc")

// ErrNotSupported is returned by Listen on platforms other than Linux.
var ErrNotSupported = errors.New("process events are only supported on Linux")

// Kind is the type of an Event.
type Kind uint8

// The kinds of events reported; the kernel's other events (uid, gid, sid,
// ptrace, comm and coredump changes) are skipped.
const (
	Fork Kind = iota + 1 // a process or thread was created
	Exec                 // a process called execve successfully
	Exit                 // a thread ended; the process if PID == TGID
)

func (k Kind) String() string {
	switch k {
	case Fork:
		return "fork"
	case Exec:
		return "exec"
	case Exit:
		return "exit"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Event is one process event, with PIDs as the initial PID namespace
// numbers them.
type Event struct {
	Kind Kind
	// PID is the thread id, TGID the process id (for Fork: of the child).
	PID, TGID int
	// ParentPID and ParentTGID are the parent thread and process for Fork;
	// for Exit, the parent if the kernel reports it (4.18 and later), else 0.
	ParentPID, ParentTGID int
	// ExitCode is, for Exit, the wait status (see Signal and ExitStatus).
	ExitCode uint32
	// ExitSignal is, for Exit, the kernel's exit_signal: the signal the
	// parent is sent (SIGCHLD for a process, -1 as uint32 for a thread).
	// It is not the signal that killed the process; see Signal.
	ExitSignal uint32
	// Time is when the kernel reported the event, CLOCK_MONOTONIC.
	Time time.Duration
}

// Signal returns the signal that killed the thread of an Exit event and
// whether it dumped core, or 0 and false if the thread exited normally or
// e is not an Exit event.
func (e Event) Signal() (sig syscall.Signal, core bool) {
	if e.Kind != Exit {
		return 0, false
	}
	s := e.ExitCode & 0x7f
	if s == 0 || s == 0x7f { // exited; 0x7f would be a stop
		return 0, false
	}
	return syscall.Signal(s), e.ExitCode&0x80 != 0
}

// ExitStatus returns the exit status (0 to 255) of an Exit event whose
// thread exited normally, with ok true; ok is false if it was killed by a
// signal or e is not an Exit event.
func (e Event) ExitStatus() (status int, ok bool) {
	if e.Kind != Exit || e.ExitCode&0x7f != 0 {
		return 0, false
	}
	return int(e.ExitCode>>8) & 0xff, true
}

func (e Event) String() string {
	switch e.Kind {
	case Fork:
		return fmt.Sprintf("fork %d/%d -> %d/%d", e.ParentTGID, e.ParentPID, e.TGID, e.PID)
	case Exit:
		if sig, core := e.Signal(); sig != 0 {
			return fmt.Sprintf("exit %d/%d killed by %v (core dumped: %t)", e.TGID, e.PID, sig, core)
		}
		status, _ := e.ExitStatus()
		return fmt.Sprintf("exit %d/%d status %d", e.TGID, e.PID, status)
	}
	return fmt.Sprintf("%v %d/%d", e.Kind, e.TGID, e.PID)
}
