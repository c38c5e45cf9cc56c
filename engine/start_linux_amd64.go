//go:build linux && amd64

package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/patch"
)

// Starting a program patched.
//
// A process patched after it started has run its constructors and main
// already, and one that sits in a patched function from its first instant
// is refused as busy. Start runs the program as its tracee, so the kernel
// stops it at the exec, before any of its instructions, then lets it run
// to its entry point (every library mapped and relocated by the dynamic
// linker, none of the program's own code run): its entry's first
// instructions are copied into the executable's slack behind
//
//	push %rax; mov $SYS_getpid,%eax; syscall; pop %rax
//
// and followed by a jump back, and the entry made a jump to that copy. At
// the getpid stop the entry and the slack get their own bytes back, the
// thread is put at the entry as it was, and detached with SIGSTOP, so it
// stays stopped there (a job-control stop) while the patches are applied
// the usual way; then SIGCONT lets it go. No breakpoint is involved: if
// hotpatch dies meanwhile, the kernel detaches the thread, which runs the
// copied instructions and starts unpatched; if it dies during the stop,
// the program's parent-death signal, SIGCONT, continues it.

// StartResult is the outcome of one patch in Start: Result when applied,
// Err when not (a *BuildIDMismatchError when the program does not map the
// patch's target).
type StartResult struct {
	Patch  *patch.Patch
	Result *Result
	Err    error
}

// Start starts cmd (as cmd.Start does; cmd.SysProcAttr.Ptrace is set) and
// applies each patch whose target module the program maps before any of
// the program's own code runs, then lets it run. Call cmd.Wait as usual
// afterwards. The error is about starting: a patch that does not apply is
// reported in its StartResult, and the program runs on without it.
func Start(cmd *exec.Cmd, patches []*patch.Patch, opts Options) ([]StartResult, error) {
	for _, p := range patches {
		if err := patch.Verify(p, opts.Trusted); err != nil {
			return nil, err
		}
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Ptrace = true
	// If hotpatch dies while the program waits in its job-control stop,
	// the end of the thread that started it continues it. (It keeps
	// that setting: when the thread ends, after Start, the program gets
	// one more SIGCONT, which does nothing to a running process without
	// a handler for it.)
	cmd.SysProcAttr.Pdeathsig = syscall.SIGCONT
	tr := newTracer()
	defer tr.close() // only once the program runs
	if err := tr.do(cmd.Start); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	err := tr.do(func() error { return holdAtEntry(pid) })
	if err == nil {
		err = faultAt("start-held")
	}
	if err != nil {
		// Whatever happened, the program runs on (unpatched) or has
		// ended; the caller waits for it.
		return nil, fmt.Errorf("process %d: stopping it at its entry point: %w", pid, err)
	}
	var out []StartResult
	for _, p := range patches {
		r := StartResult{Patch: p}
		r.Result, r.Err = Apply(pid, p, opts)
		out = append(out, r)
	}
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		return out, fmt.Errorf("process %d: letting it run: %w", pid, err)
	}
	return out, nil
}

// entryStubHead is the stub's start: push %rax; mov $getpid,%eax; syscall;
// pop %rax. entryStop is the PC at its system-call stop.
var entryStubHead = []byte{0x50, 0xb8, sysGetpid, 0, 0, 0, 0x0f, 0x05, 0x58}

const entryStop = 8

// holdAtEntry takes the traced child pid, stopped at its exec, to its
// entry point and leaves it there in a job-control stop, detached. On the
// tracer thread that started it.
func holdAtEntry(pid int) error {
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return err
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		return fmt.Errorf("it did not stop at its exec (%v)", ws)
	}
	detached := false
	defer func() {
		if !detached {
			unix.PtraceDetach(pid) // it runs on, from wherever it is
		}
	}()
	if err := unix.PtraceSetOptions(pid, unix.PTRACE_O_TRACESYSGOOD); err != nil {
		return err
	}
	entry, err := auxEntry(pid)
	if err != nil {
		return err
	}
	t, err := openTarget(pid)
	if err != nil {
		return err
	}
	defer t.close()
	var slack *slackArea
	for _, a := range t.slackAreas() {
		m := t.moduleAt(a.addr)
		if m != nil && entry >= m.Start && entry < m.End {
			slack = &a
			break
		}
	}
	code := make([]byte, 32)
	if err := t.mem.Peek(code, entry); err != nil {
		return err
	}
	n, err := displaceable(code)
	if err != nil {
		return err
	}
	stub := append(append([]byte{}, entryStubHead...), code[:n]...)
	if slack == nil || uint64(len(stub)+5) > slack.size {
		return errors.New("its executable has no room at the end of its code for the entry stub")
	}
	back := int64(entry+uint64(n)) - int64(slack.addr+uint64(len(stub))+5)
	stub = append(stub, 0xe9)
	stub = binary.LittleEndian.AppendUint32(stub, uint32(int32(back)))
	jump := binary.LittleEndian.AppendUint32([]byte{0xe9}, uint32(int32(int64(slack.addr)-int64(entry+5))))
	if err := t.mem.Poke(stub, slack.addr); err != nil {
		return err
	}
	restore := func() error {
		if err := t.mem.Poke(code[:5], entry); err != nil {
			return err
		}
		return t.mem.Poke(slack.file[:len(stub)], slack.addr)
	}
	if err := t.mem.Poke(jump, entry); err != nil {
		t.mem.Poke(slack.file[:len(stub)], slack.addr)
		return err
	}
	// On to the stub's getpid; the dynamic linker's system calls pass.
	deadline := time.Now().Add(10 * time.Second)
	sig := 0
	for {
		if err := unix.PtraceSyscall(pid, sig); err != nil {
			return err
		}
		sig = 0
		ws, err := waitThread(pid, true, deadline)
		if err != nil {
			restore()
			return err
		}
		if ws.Exited() || ws.Signaled() {
			detached = true
			return fmt.Errorf("it ended before its entry point (%v)", ws)
		}
		if ws.StopSignal() != stopSysgood {
			if s := ws.StopSignal(); s != unix.SIGTRAP && s != unix.SIGSTOP {
				sig = int(s)
			}
			continue
		}
		r, err := getRegs(pid)
		if err != nil {
			restore()
			return err
		}
		if r.Rip != slack.addr+entryStop || r.Orig_rax != sysGetpid {
			continue
		}
		// At the entry, as it was: the getpid skipped, %rax popped.
		var v [8]byte
		if err := t.mem.Peek(v[:], r.Rsp); err != nil {
			return err // it runs the stub on and starts unpatched
		}
		if err := restore(); err != nil {
			return err
		}
		r.Rax, r.Rsp, r.Rip, r.Orig_rax = binary.LittleEndian.Uint64(v[:]), r.Rsp+8, entry, ^uint64(0)
		if err := setRegs(pid, &r); err != nil {
			return err
		}
		break
	}
	// Detach into a job-control stop, and take its report (we are its
	// parent) so that cmd.Wait does not see it.
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(pid), 0, uintptr(unix.SIGSTOP), 0, 0); e != 0 {
		return e
	}
	detached = true
	for {
		_, err := unix.Wait4(pid, &ws, unix.WUNTRACED, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if ws.Exited() || ws.Signaled() {
			return fmt.Errorf("it ended at its entry point (%v)", ws)
		}
		if ws.Stopped() {
			return nil
		}
	}
}

// displaceable returns how many bytes of whole instructions at the start
// of code (at least 5, for the jump) can run from another address as they
// are: no PC-relative operand, no branch.
func displaceable(code []byte) (int, error) {
	n := 0
	for n < 5 {
		if bytes.HasPrefix(code[n:], []byte{0xf3, 0x0f, 0x1e, 0xfa}) { // endbr64
			n += 4
			continue
		}
		in, err := x86asm.Decode(code[n:], 64)
		if err != nil {
			return 0, fmt.Errorf("decoding its entry point: %w", err)
		}
		for _, a := range in.Args {
			switch a := a.(type) {
			case x86asm.Rel:
				return 0, fmt.Errorf("its entry point starts with a branch (%v)", in)
			case x86asm.Mem:
				if a.Base == x86asm.RIP {
					return 0, fmt.Errorf("its entry point starts with a PC-relative instruction (%v)", in)
				}
			}
		}
		switch in.Op {
		case x86asm.CALL, x86asm.JMP, x86asm.RET, x86asm.SYSCALL:
			return 0, fmt.Errorf("its entry point starts with %v", in)
		}
		n += in.Len
	}
	return n, nil
}

// auxEntry reads the program's entry point (AT_ENTRY) from its auxiliary
// vector.
func auxEntry(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid))
	if err != nil {
		return 0, processError(pid, err)
	}
	for i := 0; i+16 <= len(b); i += 16 {
		if binary.LittleEndian.Uint64(b[i:]) == atEntry {
			return binary.LittleEndian.Uint64(b[i+8:]), nil
		}
	}
	return 0, errors.New("no AT_ENTRY in its auxiliary vector")
}

// atEntry is AT_ENTRY of <elf.h>.
const atEntry = 9
