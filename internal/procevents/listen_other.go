//go:build !linux

package procevents

// Listener receives process events; only on Linux.
type Listener struct{}

// Listen returns ErrNotSupported: process events are Linux only.
func Listen() (*Listener, error) { return nil, ErrNotSupported }

// Read returns ErrNotSupported.
func (l *Listener) Read() ([]Event, error) { return nil, ErrNotSupported }

// Close returns ErrNotSupported.
func (l *Listener) Close() error { return ErrNotSupported }
