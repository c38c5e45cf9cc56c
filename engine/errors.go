package engine

import (
	"errors"
	"fmt"
	"io/fs"
)

// ErrNotSupported is returned on platforms the engine does not run on.
var ErrNotSupported = errors.New("live patching is only supported on Linux x86-64")

// ErrNoProcess is returned when the target process does not exist (or exited).
var ErrNoProcess = errors.New("no such process")

// ErrMainThreadExited is returned for a process whose main thread has
// exited while others run (pthread_exit in main): the kernel then serves
// neither its memory nor its maps through /proc/PID, which the engine
// reads; patching such a process is not supported yet.
var ErrMainThreadExited = errors.New("its main thread has exited (pthread_exit in main); patching such a process is not supported yet")

// ErrPermission is wrapped by the errors of what the caller is not
// privileged to do: reading another user's process, attaching to it, or
// opening the files it maps through /proc/PID/map_files (which needs
// CAP_CHECKPOINT_RESTORE, or CAP_SYS_ADMIN, even for one's own processes).
// The message says what is needed.
var ErrPermission = errors.New("permission denied")

// needMapFiles is what opening /proc/PID/map_files/* takes.
const needMapFiles = "needs CAP_CHECKPOINT_RESTORE or root"

// needProc is what reading and patching other processes takes.
const needProc = "needs root, or CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE"

func processError(pid int, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
	}
	if errors.Is(err, fs.ErrPermission) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("process %d: %s %s: %w (%s)", pid, pe.Op, pe.Path, ErrPermission, needProc)
		}
		return fmt.Errorf("process %d: %w (%s)", pid, ErrPermission, needProc)
	}
	return fmt.Errorf("process %d: %w", pid, err)
}

// mapFilesError is the error of a module file that /proc/PID/map_files
// would not open for lack of privilege.
func mapFilesError(pid int, path string) error {
	return fmt.Errorf("process %d: cannot open the files it maps (%s): %w (%s)", pid, path, ErrPermission, needMapFiles)
}

// ErrHalfDone is wrapped by the error of an apply (or revert) that failed
// after it had begun to change the process and could not undo that at
// once: the
// patch stays mapped, in a state its record describes, because code may
// still jump or return into it. The next apply or revert in the process
// finishes undoing it (see "Crash safety" in docs/engine.md).
var ErrHalfDone = errors.New("the patch is left half done")

// HalfDoneError reports an apply or revert that failed after its first
// change to the process and left the patch mapped in State for the next
// apply or revert to finish or undo. It wraps ErrHalfDone and the cause.
type HalfDoneError struct {
	PID   int
	ID    string
	State string // StateRedirecting, or StatePreparing with a return address redirected
	Err   error  // what failed
}

func (e *HalfDoneError) Error() string {
	return fmt.Sprintf("process %d: %v; %s: the patch %s stays mapped in state %s (code may still jump or return into it), and the next hotpatch apply or revert in this process finishes or undoes it",
		e.PID, e.Err, ErrHalfDone, e.ID, e.State)
}

func (e *HalfDoneError) Unwrap() []error { return []error{ErrHalfDone, e.Err} }
