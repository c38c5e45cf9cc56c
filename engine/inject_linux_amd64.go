//go:build linux && amd64

package engine

import (
	"bytes"
	"fmt"

	"golang.org/x/sys/unix"
)

// findSyscallGadget returns the address of a "syscall" instruction (0f 05)
// in an executable file mapping of the process: the engine makes remote
// system calls by pointing a stopped thread at it for one step, without
// ever writing code into the target for that.
func findSyscallGadget(mem *memory, maps []Mapping) (uint64, error) {
	for _, pass := range []func(Mapping) bool{
		func(m Mapping) bool { return m.Path == "[vdso]" },
		func(m Mapping) bool { return len(m.Perms) == 4 && m.Perms[2] == 'x' && m.Inode != 0 },
	} {
		for _, m := range maps {
			if !pass(m) || m.Perms[0] != 'r' || m.Perms[2] != 'x' {
				continue
			}
			size := min(m.Size(), 8<<20)
			buf := make([]byte, size)
			if err := mem.ReadAt(buf, m.Start); err != nil {
				continue
			}
			if i := bytes.Index(buf, []byte{0x0f, 0x05}); i >= 0 {
				return m.Start + uint64(i), nil
			}
		}
	}
	return 0, fmt.Errorf("process %d maps no code with a syscall instruction", mem.pid)
}

// remoteSyscall makes thread tid (stopped) execute one system call and
// puts its registers back exactly as they were, so a system call it was
// blocked in restarts transparently when it resumes. Must run on the
// tracer thread.
func remoteSyscall(th *thread, gadget uint64, nr uintptr, args ...uint64) (uint64, error) {
	tid := th.tid
	saved, err := getRegs(tid)
	if err != nil {
		return 0, fmt.Errorf("reading registers of thread %d: %w", tid, err)
	}
	r := saved
	r.Rip = gadget
	r.Rax = uint64(nr)
	r.Orig_rax = ^uint64(0) // not in a system call: no restart logic
	regs := []*uint64{&r.Rdi, &r.Rsi, &r.Rdx, &r.R10, &r.R8, &r.R9}
	for i, a := range args {
		*regs[i] = a
	}
	if err := setRegs(tid, &r); err != nil {
		return 0, fmt.Errorf("setting registers of thread %d: %w", tid, err)
	}
	defer setRegs(tid, &saved)
	var out unix.PtraceRegs
	for try := 0; ; try++ {
		if err := unix.PtraceSingleStep(tid); err != nil {
			return 0, fmt.Errorf("stepping thread %d: %w", tid, err)
		}
		// A signal that arrives first stops the thread before the step;
		// waitStop keeps it for delivery on resume, and we step again.
		if err := waitStop(th, nil); err != nil {
			return 0, err
		}
		if out, err = getRegs(tid); err != nil {
			return 0, err
		}
		if out.Rip == gadget+2 {
			break
		}
		if out.Rip != gadget || try > 100 {
			return 0, fmt.Errorf("remote system call %d in thread %d stopped at %#x, not after the gadget", nr, tid, out.Rip)
		}
	}
	if int64(out.Rax) < 0 && int64(out.Rax) > -4096 {
		return 0, fmt.Errorf("remote system call %d: %w", nr, unix.Errno(-int64(out.Rax)))
	}
	return out.Rax, nil
}
