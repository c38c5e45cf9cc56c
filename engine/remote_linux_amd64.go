//go:build linux && amd64

package engine

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Remote calls.
//
// The engine makes system calls (and, for IFUNCs, function calls) in the
// target by pointing its main thread, stopped, at a small trampoline and
// letting it run to a system-call stop (PTRACE_SYSCALL). Never by
// single-stepping: the kernel keeps the trap flag and debug registers of a
// thread whose tracer dies, and the thread then dies of SIGTRAP.
//
// The trampoline is written into the slack of an executable mapping (the
// bytes after the end of a module's code segment up to the end of its last
// page: mapped, executable, never run by the program). It is:
//
//	+0   syscall                      remote system calls start here
//	+2   jmp restore
//	+4   mov %rax,%rdi                remote function calls return here
//	+7   mov $SYS_getpid,%eax         (a system-call stop that hands the
//	+12  syscall                       result over in %rdi)
//	+14  restore: rt_sigprocmask(SIG_SETMASK, &mask, NULL, 8), then every
//	     register and the flags of the thread as it was stopped, as
//	     immediates, then jmp *resume_rip
//	     mask (8 bytes), then strings (the memfd name)
//
// So whatever instant hotpatch dies at, the kernel detaches the thread and
// it runs on: through the system call it was about to make, through the
// restore code, and back into the program exactly where it was stopped (a
// system call it was blocked in restarts, as the kernel would do). While
// the engine is alive the thread never reaches the restore code. The slack
// is put back to the file's bytes at the end of every session, and a slack
// left changed by a killed hotpatch is put back by the next session.
const (
	trSyscall  = 0
	trReturn   = 4
	trRestore  = 14
	trCodeSize = 14 + 27 + 10 + 6 + 15*10 + 8 + 14
	trMaskSize = 8
	// trStrings is room for the memfd name: "hotpatch:" and an id of up
	// to 128 bytes (the patch format's limit), and a NUL.
	trStrings   = 160
	trNeed      = trCodeSize + trMaskSize + trStrings
	sysGetpid   = unix.SYS_GETPID
	stopSysgood = unix.SIGTRAP | 0x80
)

// slackArea is the unused end of a module's last code page.
type slackArea struct {
	addr, size uint64
	file       []byte // the bytes the file has there (zeros past its end)
}

// slackAreas lists the slack of every executable segment of the process's
// modules, with the file's bytes for it: the bytes of the file that follow
// the segment's own (the page is mapped from the file whole), zeros past
// the end of the file. A slack whose file bytes cannot be read is left out.
func (t *target) slackAreas() []slackArea {
	var out []slackArea
	for _, m := range t.mods {
		f, err := os.Open(mapFilePath(t.pid, m, t.maps))
		if err != nil {
			continue
		}
		ef, err := elf.NewFile(f)
		if err != nil {
			f.Close()
			continue
		}
		for _, p := range ef.Progs {
			if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 || p.Filesz != p.Memsz || p.Memsz == 0 {
				continue
			}
			end := m.Bias + p.Vaddr + p.Memsz
			pageEnd := alignUp(end, pageSize)
			if pageEnd == end || !t.executable(end, pageEnd) {
				continue
			}
			a := slackArea{addr: end, size: pageEnd - end, file: make([]byte, pageEnd-end)}
			// Not through p's reader: it ends at Filesz.
			if _, err := f.ReadAt(a.file, int64(p.Off+p.Filesz)); err != nil && !errors.Is(err, io.EOF) {
				continue
			}
			out = append(out, a)
		}
		f.Close()
	}
	return out
}

// executable reports whether [start, end) lies in one r-x mapping.
func (t *target) executable(start, end uint64) bool {
	for _, m := range t.maps {
		if start >= m.Start && end <= m.End {
			return len(m.Perms) >= 3 && m.Perms[0] == 'r' && m.Perms[2] == 'x'
		}
	}
	return false
}

// session is the target's main thread, stopped, making calls for the
// engine through the trampoline.
type session struct {
	t  *target
	th *thread
	// saved are the registers as the thread was stopped; resume the same
	// with a system call it was interrupted in set to restart.
	saved, resume unix.PtraceRegs
	mask          uint64
	tramp         slackArea
	strings       uint64 // next free byte of the strings area
	fpSaved       bool
	fp            [512]byte
}

// withSyscalls stops the target's main thread (the others run on), puts
// back any slack a killed hotpatch left changed, closes and unmaps what it
// left half made, writes the trampoline, runs fn and puts everything back.
func (t *target) withSyscalls(fn func(s *session) error) error {
	for try := 0; ; try++ {
		err := t.trySession(fn)
		if !errors.Is(err, errRetrySession) {
			return err
		}
		if try == 50 {
			return fmt.Errorf("process %d: its main thread keeps receiving signals or running a trampoline; try again", t.pid)
		}
		time.Sleep(time.Duration(try+1) * time.Millisecond)
	}
}

// errRetrySession: the main thread was caught at an unsuitable moment (a
// signal about to be delivered, or still leaving a killed hotpatch's
// trampoline); let it run a little and try again.
var errRetrySession = errors.New("retry")

func (t *target) trySession(fn func(s *session) error) error {
	if err := t.refresh(); err != nil {
		return err
	}
	w, err := stopThreads(t.pid, []int{t.pid})
	if err != nil {
		return err
	}
	defer w.release()
	th := w.threads[t.pid]
	if th == nil {
		return fmt.Errorf("process %d: %w", t.pid, ErrNoProcess)
	}
	if th.pending != 0 {
		return errRetrySession
	}
	areas := t.slackAreas()
	return w.tr.do(func() error {
		s := &session{t: t, th: th}
		var err error
		if s.saved, err = getRegs(th.tid); err != nil {
			return fmt.Errorf("reading registers of thread %d: %w", th.tid, err)
		}
		for _, a := range areas {
			if s.saved.Rip >= a.addr && s.saved.Rip < a.addr+a.size {
				return errRetrySession
			}
		}
		// Put back slack a killed hotpatch left changed; choose ours.
		for _, a := range areas {
			cur := make([]byte, a.size)
			if err := t.mem.Peek(cur, a.addr); err != nil {
				continue
			}
			if string(cur) != string(a.file) {
				if err := t.mem.Poke(a.file, a.addr); err != nil {
					return err
				}
			}
			if s.tramp.size == 0 && a.size >= trNeed {
				s.tramp = a
			}
		}
		if s.tramp.size == 0 {
			return fmt.Errorf("process %d: no module has %d free bytes at the end of its code for the call trampoline", t.pid, trNeed)
		}
		s.resume = resumeRegs(s.saved)
		if s.mask, err = getSigmask(th.tid); err != nil {
			return fmt.Errorf("reading the signal mask of thread %d: %w", th.tid, err)
		}
		if err := t.mem.Poke(trampoline(s.tramp.addr, &s.resume, s.mask), s.tramp.addr); err != nil {
			return err
		}
		s.strings = s.tramp.addr + trCodeSize + trMaskSize
		// From here, the order of the way back matters: registers first
		// (the thread must never be left pointing at the trampoline when
		// its bytes are gone), then the mask, then the slack.
		defer func() {
			if s.fpSaved {
				setFPRegs(th.tid, &s.fp)
			}
			if err := setRegs(th.tid, &s.resume); err == nil {
				setSigmask(th.tid, s.mask)
				t.mem.Poke(s.tramp.file, s.tramp.addr)
			}
		}()
		// Block every signal in this thread while it works for us: a
		// signal stays queued (with its full siginfo) and is delivered
		// once the mask is back. Process-wide signals go to other threads.
		if err := setSigmask(th.tid, ^uint64(0)); err != nil {
			return fmt.Errorf("blocking signals in thread %d: %w", th.tid, err)
		}
		if err := s.cleanLeftovers(); err != nil {
			return err
		}
		return fn(s)
	})
}

// resumeRegs returns where a thread stopped with registers r goes on: a
// system call it was interrupted in is set to restart, as the kernel does
// for a thread that has no signal handler to run.
func resumeRegs(r unix.PtraceRegs) unix.PtraceRegs {
	if int64(r.Orig_rax) >= 0 {
		switch int64(r.Rax) {
		case -512, -513, -514: // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND
			r.Rax, r.Rip, r.Orig_rax = r.Orig_rax, r.Rip-2, ^uint64(0)
		case -516: // ERESTART_RESTARTBLOCK
			r.Rax, r.Rip, r.Orig_rax = unix.SYS_RESTART_SYSCALL, r.Rip-2, ^uint64(0)
		}
	}
	r.Eflags &^= 0x100 // never the trap flag
	return r
}

// trampoline assembles the trampoline for address at, returning to r with
// signal mask mask.
func trampoline(at uint64, r *unix.PtraceRegs, mask uint64) []byte {
	c := make([]byte, 0, trCodeSize+trMaskSize)
	c = append(c, 0x0f, 0x05)                             // +0 syscall
	c = append(c, 0xeb, trRestore-4)                      // +2 jmp restore
	c = append(c, 0x48, 0x89, 0xc7)                       // +4 mov %rax,%rdi
	c = append(c, 0xb8, sysGetpid, 0, 0, 0)               // +7 mov $getpid,%eax
	c = append(c, 0x0f, 0x05)                             // +12 syscall
	c = append(c, 0xb8, unix.SYS_RT_SIGPROCMASK, 0, 0, 0) // mov $rt_sigprocmask,%eax
	c = append(c, 0xbf, unix.SIG_SETMASK, 0, 0, 0)        // mov $SIG_SETMASK,%edi
	leaEnd := at + uint64(len(c)) + 7                     // lea mask(%rip),%rsi
	c = append(c, 0x48, 0x8d, 0x35)
	c = binary.LittleEndian.AppendUint32(c, uint32(at+trCodeSize-leaEnd))
	c = append(c, 0x31, 0xd2)             // xor %edx,%edx
	c = append(c, 0x41, 0xba, 8, 0, 0, 0) // mov $8,%r10d
	c = append(c, 0x0f, 0x05)             // syscall
	c = append(c, 0x48, 0xbc)             // mov $rsp-256,%rsp
	c = binary.LittleEndian.AppendUint64(c, r.Rsp-256)
	c = append(c, 0x68) // push $flags
	c = binary.LittleEndian.AppendUint32(c, uint32(r.Eflags))
	c = append(c, 0x9d) // popfq; nothing below changes the flags
	for _, reg := range []struct {
		n int
		v uint64
	}{
		{0, r.Rax}, {1, r.Rcx}, {2, r.Rdx}, {3, r.Rbx}, {5, r.Rbp}, {6, r.Rsi}, {7, r.Rdi},
		{8, r.R8}, {9, r.R9}, {10, r.R10}, {11, r.R11}, {12, r.R12}, {13, r.R13}, {14, r.R14}, {15, r.R15},
	} {
		rex := byte(0x48)
		if reg.n >= 8 {
			rex |= 1
		}
		c = append(c, rex, 0xb8+byte(reg.n&7)) // movabs $v,%reg
		c = binary.LittleEndian.AppendUint64(c, reg.v)
	}
	c = append(c, 0x48, 0x8d, 0xa4, 0x24, 0, 1, 0, 0) // lea 256(%rsp),%rsp
	c = append(c, 0xff, 0x25, 0, 0, 0, 0)             // jmp *0(%rip)
	c = binary.LittleEndian.AppendUint64(c, r.Rip)
	if len(c) != trCodeSize {
		panic(fmt.Sprintf("trampoline is %d bytes, want %d", len(c), trCodeSize))
	}
	return binary.LittleEndian.AppendUint64(c, mask)
}

// remoteString writes a NUL-terminated string into the trampoline's strings area
// and returns its address in the target.
func (s *session) remoteString(v string) (uint64, error) {
	end := s.tramp.addr + trNeed
	if s.strings+uint64(len(v))+1 > end {
		return 0, fmt.Errorf("string %q does not fit the trampoline", v)
	}
	a := s.strings
	if err := s.t.mem.Poke(append([]byte(v), 0), a); err != nil {
		return 0, err
	}
	s.strings += uint64(len(v)) + 1
	return a, nil
}

// syscall makes system call nr in the target and returns its result.
func (s *session) syscall(nr uintptr, args ...uint64) (uint64, error) {
	r := s.resume
	r.Rip = s.tramp.addr + trSyscall
	r.Rax, r.Orig_rax = uint64(nr), ^uint64(0)
	regs := []*uint64{&r.Rdi, &r.Rsi, &r.Rdx, &r.R10, &r.R8, &r.R9}
	for i, a := range args {
		*regs[i] = a
	}
	if err := setRegs(s.th.tid, &r); err != nil {
		return 0, fmt.Errorf("setting registers of thread %d: %w", s.th.tid, err)
	}
	after := s.tramp.addr + trSyscall + 2
	entry, err := s.nextSyscallStop(time.Time{})
	if err != nil {
		return 0, err
	}
	if entry.Rip != after || entry.Orig_rax != uint64(nr) {
		return 0, fmt.Errorf("remote system call %d in thread %d stopped at %#x (system call %d)", nr, s.th.tid, entry.Rip, int64(entry.Orig_rax))
	}
	out, err := s.nextSyscallStop(time.Time{})
	if err != nil {
		return 0, err
	}
	if int64(out.Rax) < 0 && int64(out.Rax) > -4096 {
		return 0, fmt.Errorf("remote system call %d: %w", nr, unix.Errno(-int64(out.Rax)))
	}
	return out.Rax, nil
}

// call calls the function at fn (no arguments) in the target and returns
// what it returns. The function returns into the trampoline, whose getpid
// stop hands the result over; a function that has not returned within a
// second is abandoned and the thread put back.
func (s *session) call(fn uint64) (uint64, error) {
	if shadowStack(s.t.pid) {
		return 0, fmt.Errorf("process %d uses a shadow stack; calling a function in it is not supported", s.t.pid)
	}
	if !s.fpSaved {
		if err := getFPRegs(s.th.tid, &s.fp); err != nil {
			return 0, fmt.Errorf("reading the FPU registers of thread %d: %w", s.th.tid, err)
		}
		s.fpSaved = true
	}
	r := s.resume
	// Below the red zone, 16-byte aligned at the call, then the return
	// address.
	sp := ((s.resume.Rsp - 1024) &^ 15) - 8
	var ret [8]byte
	binary.LittleEndian.PutUint64(ret[:], s.tramp.addr+trReturn)
	if err := s.t.mem.Poke(ret[:], sp); err != nil {
		return 0, err
	}
	r.Rsp, r.Rip, r.Rax, r.Orig_rax = sp, fn, 0, ^uint64(0)
	if err := setRegs(s.th.tid, &r); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(time.Second)
	back := s.tramp.addr + trReturn + 10
	for i := 0; i < 1000; i++ {
		st, err := s.nextSyscallStop(deadline)
		if err != nil {
			return 0, fmt.Errorf("calling %#x in process %d: %w", fn, s.t.pid, err)
		}
		// Entry and exit stops alternate; the function's own system
		// calls pass through.
		if st.Rip == back && st.Orig_rax == sysGetpid {
			if _, err := s.nextSyscallStop(deadline); err != nil { // its exit
				return 0, err
			}
			return st.Rdi, nil
		}
	}
	return 0, fmt.Errorf("function %#x in process %d did not return", fn, s.t.pid)
}

// nextSyscallStop resumes the thread to its next system-call stop and
// returns its registers there. Other stops (a group stop, a fault) are
// passed over. With a deadline, a thread that does not get there in time
// is stopped again and an error returned.
func (s *session) nextSyscallStop(deadline time.Time) (unix.PtraceRegs, error) {
	tid := s.th.tid
	for i := 0; i < 100; i++ {
		if err := unix.PtraceSyscall(tid, 0); err != nil {
			return unix.PtraceRegs{}, fmt.Errorf("resuming thread %d: %w", tid, err)
		}
		// A session traces the main thread alone (trySession).
		ws, err := waitThread(tid, true, deadline)
		if err != nil {
			return unix.PtraceRegs{}, err
		}
		if ws.Exited() || ws.Signaled() {
			return unix.PtraceRegs{}, errThreadGone
		}
		if ws.Stopped() && ws.StopSignal() == stopSysgood {
			return getRegs(tid)
		}
		if ws.Stopped() && ws.TrapCause() != unix.PTRACE_EVENT_STOP && ws.StopSignal() == unix.SIGSTOP && s.th.pending == 0 {
			// The one signal that cannot be blocked and stops: hand it
			// back on release. Faults (in a called function) are not
			// handed back; the call fails instead.
			s.th.pending = unix.SIGSTOP
		}
	}
	return unix.PtraceRegs{}, fmt.Errorf("thread %d does not reach its system call", tid)
}

// waitThread waits for tid, the main thread, to change state; past a
// non-zero deadline it interrupts the thread, waits (boundedly) for that
// stop and returns an error. alone says no other thread of the process is
// traced. It ends when the thread dies (see waitTracee).
func waitThread(tid int, alone bool, deadline time.Time) (unix.WaitStatus, error) {
	ws, err := waitTracee(tid, !alone, deadline)
	if errors.Is(err, errWaitTimeout) {
		unix.PtraceInterrupt(tid)
		ws, err = waitTracee(tid, true, time.Now().Add(stopTimeout))
		if err == nil || errors.Is(err, errWaitTimeout) {
			err = fmt.Errorf("thread %d timed out", tid)
		}
	}
	return ws, err
}

// cleanLeftovers closes the memfds and unmaps the patch mappings that a
// hotpatch killed between creating and filling them left behind. It runs
// while this session holds the main thread, so no other hotpatch is in
// the middle of making them. A mapping is left over when none of it was
// ever made executable (the code is written before it is).
func (s *session) cleanLeftovers() error {
	dir := fmt.Sprintf("/proc/%d/fd", s.t.pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil || !strings.HasPrefix(link, "/memfd:"+mappingPrefix) {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, err := s.syscall(unix.SYS_CLOSE, uint64(fd)); err != nil {
			return fmt.Errorf("process %d: closing a left-over patch memfd: %w", s.t.pid, err)
		}
	}
	maps, err := readMaps(s.t.pid)
	if err != nil {
		return err
	}
	type group struct {
		start, end uint64
		exec       bool
	}
	groups := map[string]*group{}
	var order []string
	for _, m := range maps {
		if !strings.Contains(m.Path, "/memfd:"+mappingPrefix) {
			continue
		}
		key := m.Dev + ":" + fmt.Sprint(m.Inode)
		g := groups[key]
		if g == nil {
			g = &group{start: m.Start, end: m.End}
			groups[key] = g
			order = append(order, key)
		}
		g.start, g.end = min(g.start, m.Start), max(g.end, m.End)
		g.exec = g.exec || strings.Contains(m.Perms, "x")
	}
	for _, k := range order {
		if g := groups[k]; !g.exec {
			if _, err := s.syscall(unix.SYS_MUNMAP, g.start, g.end-g.start); err != nil {
				return fmt.Errorf("process %d: unmapping left-over patch memory: %w", s.t.pid, err)
			}
		}
	}
	return nil
}

// shadowStack reports whether the process runs with a user shadow stack
// (a call whose return address is not on it would fault).
func shadowStack(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "x86_Thread_features:") && strings.Contains(l, "shstk") {
			return true
		}
	}
	return false
}

func getSigmask(tid int) (uint64, error) {
	var m uint64
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETSIGMASK, uintptr(tid), 8, uintptr(unsafe.Pointer(&m)), 0, 0)
	if e != 0 {
		return 0, e
	}
	return m, nil
}

func setSigmask(tid int, m uint64) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETSIGMASK, uintptr(tid), 8, uintptr(unsafe.Pointer(&m)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getFPRegs(tid int, fp *[512]byte) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETFPREGS, uintptr(tid), 0, uintptr(unsafe.Pointer(fp)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func setFPRegs(tid int, fp *[512]byte) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SETFPREGS, uintptr(tid), 0, uintptr(unsafe.Pointer(fp)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
