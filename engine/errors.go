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

func processError(pid int, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("process %d: %w", pid, ErrNoProcess)
	}
	return fmt.Errorf("process %d: %w", pid, err)
}
