package kmsg

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// recordMax is the longest record /dev/kmsg returns (CONSOLE_EXT_LOG_MAX);
// a read into a smaller buffer fails with EINVAL.
const recordMax = 8192

// Reader reads the fault reports logged after Open. Call Next from one
// goroutine; Close from any.
type Reader struct {
	f   *os.File
	buf []byte
}

// Open opens /dev/kmsg positioned at its end, so that Next returns only
// faults logged from now on. Reading /dev/kmsg needs CAP_SYSLOG when
// kernel.dmesg_restrict is 1.
func Open() (*Reader, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return nil, fmt.Errorf("kmsg: reading /dev/kmsg needs CAP_SYSLOG (kernel.dmesg_restrict is 1; run hotpatchd as root): %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("kmsg: open /dev/kmsg: %w", err)
	}
	if _, err := unix.Seek(fd, 0, io.SeekEnd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kmsg: seek to the end of /dev/kmsg: %w", err)
	}
	// Non-blocking, so that the runtime's poller waits and Close wakes it.
	return &Reader{f: os.NewFile(uintptr(fd), "/dev/kmsg"), buf: make([]byte, recordMax)}, nil
}

// Next blocks until the kernel logs a fault report and returns it,
// skipping every other record. Records overwritten in the kernel's ring
// buffer before Next could read them are lost silently. After Close it
// returns an error wrapping os.ErrClosed.
func (r *Reader) Next() (Fault, error) {
	for {
		n, err := r.f.Read(r.buf)
		switch {
		case err == nil:
			if f, ok := ParseLine(string(r.buf[:n])); ok {
				return f, nil
			}
		case errors.Is(err, unix.EPIPE):
			// The ring buffer wrapped past our position; the next read
			// returns the oldest record left.
		default:
			return Fault{}, fmt.Errorf("kmsg: %w", err)
		}
	}
}

// Close closes /dev/kmsg and makes a pending Next return. It is safe to
// call more than once and from any goroutine.
func (r *Reader) Close() error {
	if err := r.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("kmsg: %w", err)
	}
	return nil
}
