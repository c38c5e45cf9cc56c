//go:build linux && amd64

package engine

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// memory reads and writes a target's address space. Reads use
// process_vm_readv; writes go through /proc/PID/mem, which (unlike
// process_vm_writev) can write read-only text, as ptrace's POKETEXT can.
type memory struct {
	pid int
	f   *os.File
}

func openMemory(pid int) (*memory, error) {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		return nil, processError(pid, err)
	}
	return &memory{pid: pid, f: f}, nil
}

func (m *memory) Close() error { return m.f.Close() }

// Peek reads len(p) bytes at addr, all or none (it is not an io.ReaderAt:
// addresses are the target's, and a short read is an error).
func (m *memory) Peek(p []byte, addr uint64) error {
	if len(p) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &p[0], Len: uint64(len(p))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(p)}}
	n, err := unix.ProcessVMReadv(m.pid, local, remote, 0)
	if err == nil && n == len(p) {
		return nil
	}
	// Fall back to /proc/PID/mem (e.g. pages without read permission).
	if k, err2 := m.f.ReadAt(p, int64(addr)); err2 != nil || k != len(p) {
		if err == nil {
			err = err2
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading %d bytes at %#x in process %d: %w", len(p), addr, m.pid, err)
	}
	return nil
}

// Poke writes p at addr, also into read-only mappings.
func (m *memory) Poke(p []byte, addr uint64) error {
	n, err := m.f.WriteAt(p, int64(addr))
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("writing %d bytes at %#x in process %d: %w", len(p), addr, m.pid, err)
	}
	return nil
}
