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

func processError(pid int, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
	}
	return fmt.Errorf("process %d: %w", pid, err)
}
