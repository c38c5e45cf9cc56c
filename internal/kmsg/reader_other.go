//go:build !linux

package kmsg

// Reader reads the kernel log; only on Linux.
type Reader struct{}

// Open returns ErrNotSupported: the kernel log is read on Linux only.
func Open() (*Reader, error) { return nil, ErrNotSupported }

// Next returns ErrNotSupported.
func (r *Reader) Next() (Fault, error) { return Fault{}, ErrNotSupported }

// Close returns ErrNotSupported.
func (r *Reader) Close() error { return ErrNotSupported }
