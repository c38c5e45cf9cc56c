package unwind

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// The tests in this file compile the programs under testdata with gcc, run
// them as children, stop their threads with ptrace while they block, and
// check the unwound stacks against the functions the programs call. They
// only ever trace, signal or kill the processes they start.

// tids lists the threads of pid.
func tids(t testing.TB, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	sort.Ints(out)
	return out
}

// waitReading waits until n threads of pid are blocked in read(0, ...).
func waitReading(t testing.TB, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	got := 0
	for time.Now().Before(deadline) {
		got = 0
		for _, tid := range tids(t, pid) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
			if err != nil {
				continue
			}
			if f := strings.Fields(string(b)); len(f) > 1 && f[0] == "0" && f[1] == "0x0" {
				got++
			}
		}
		if got == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("pid %d: %d threads blocked reading stdin, want %d", pid, got, n)
}

// thread is one stopped thread.
type thread struct {
	tid  int
	name string
	regs Regs
}

// withStopped seizes and interrupts the threads tids of pid, calls fn while
// they are stopped, and detaches. Every ptrace call runs on one goroutine
// locked to its OS thread and never unlocked: if anything goes wrong, the
// thread exits with the goroutine and the kernel detaches what is left.
// fn runs on that goroutine too, so it must not call t.Fatal.
func withStopped(pid int, tids []int, fn func([]thread)) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- stopped(pid, tids, fn)
	}()
	return <-errc
}

func stopped(pid int, tids []int, fn func([]thread)) (err error) {
	var seized []int
	defer func() {
		for _, tid := range seized {
			if derr := unix.PtraceDetach(tid); derr != nil && err == nil {
				err = fmt.Errorf("detaching %d: %w", tid, derr)
			}
		}
	}()
	for _, tid := range tids {
		if err := unix.PtraceSeize(tid); err != nil {
			return fmt.Errorf("seizing %d: %w", tid, err)
		}
		seized = append(seized, tid)
	}
	for _, tid := range seized {
		if err := unix.PtraceInterrupt(tid); err != nil {
			return fmt.Errorf("interrupting %d: %w", tid, err)
		}
	}
	var threads []thread
	for _, tid := range seized {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(tid, &ws, unix.WALL, nil); err != nil {
			return fmt.Errorf("waiting for %d: %w", tid, err)
		}
		if !ws.Stopped() || ws.StopSignal() != syscall.SIGTRAP || ws.TrapCause() != unix.PTRACE_EVENT_STOP {
			return fmt.Errorf("thread %d: unexpected wait status %#x", tid, uint32(ws))
		}
		var r unix.PtraceRegs
		if err := unix.PtraceGetRegs(tid, &r); err != nil {
			return fmt.Errorf("registers of %d: %w", tid, err)
		}
		name, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", pid, tid))
		threads = append(threads, thread{tid: tid, name: strings.TrimSpace(string(name)), regs: Regs{
			RAX: r.Rax, RDX: r.Rdx, RCX: r.Rcx, RBX: r.Rbx, RSI: r.Rsi, RDI: r.Rdi, RBP: r.Rbp, RSP: r.Rsp,
			R8: r.R8, R9: r.R9, R10: r.R10, R11: r.R11, R12: r.R12, R13: r.R13, R14: r.R14, R15: r.R15,
			RIP: r.Rip,
		}})
	}
	fn(threads)
	return nil
}

// procMem reads a process's memory with process_vm_readv.
type procMem int

func (p procMem) ReadAt(b []byte, addr uint64) error {
	if len(b) == 0 {
		return nil
	}
	n, err := unix.ProcessVMReadv(int(p), []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err != nil {
		return err
	}
	if n != len(b) {
		return fmt.Errorf("short read: %d of %d bytes", n, len(b))
	}
	return nil
}

// image is a module of the target with what the tests need to name frames.
type image struct {
	path string // "[vdso]" for the vdso
	mod  Module
	syms []symbol // by address
}

type symbol struct {
	name       string
	addr, size uint64
}

// loaded caches the Table and symbols of each file by path.
var loaded sync.Map // path -> *loadedFile

type loadedFile struct {
	table *Table
	syms  []symbol
	base  uint64 // page-aligned p_vaddr of the PT_LOAD at file offset 0
	err   error
}

func loadELF(f *elf.File) *loadedFile {
	lf := &loadedFile{}
	if lf.table, lf.err = Load(f); lf.err != nil {
		return lf
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Off == 0 {
			lf.base = p.Vaddr &^ 0xfff
			break
		}
	}
	syms, _ := f.Symbols()
	dyn, _ := f.DynamicSymbols()
	for _, s := range append(syms, dyn...) {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 && s.Size != 0 {
			lf.syms = append(lf.syms, symbol{s.Name, s.Value, s.Size})
		}
	}
	// PLT stubs have no symbols; they have call frame information.
	for _, name := range []string{".plt", ".plt.sec", ".plt.got"} {
		if sec := f.Section(name); sec != nil {
			lf.syms = append(lf.syms, symbol{"<plt>", sec.Addr, sec.Size})
		}
	}
	sort.Slice(lf.syms, func(i, j int) bool { return lf.syms[i].addr < lf.syms[j].addr })
	return lf
}

// images describes the ELF files mapped by pid, from /proc/PID/maps.
func images(t testing.TB, pid int) []image {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	type span struct{ start, end, first uint64 } // first: the start of the mapping of offset 0
	spans := map[string]*span{}
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !(strings.HasPrefix(f[5], "/") || f[5] == "[vdso]") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		off, _ := strconv.ParseUint(f[2], 16, 64)
		path := f[5]
		s := spans[path]
		if s == nil {
			s = &span{start: start, end: end, first: ^uint64(0)}
			spans[path] = s
			order = append(order, path)
		}
		s.start, s.end = min(s.start, start), max(s.end, end)
		if off == 0 && s.first == ^uint64(0) {
			s.first = start
		}
	}
	var out []image
	for _, path := range order {
		s := spans[path]
		var lf *loadedFile
		if path == "[vdso]" {
			b := make([]byte, s.end-s.start)
			if err := procMem(pid).ReadAt(b, s.start); err != nil {
				t.Fatalf("reading the vdso: %v", err)
			}
			f, err := elf.NewFile(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("vdso: %v", err)
			}
			lf = loadELF(f)
		} else {
			v, ok := loaded.Load(path)
			if !ok {
				f, err := elf.Open(path)
				if err != nil {
					continue // not an ELF file
				}
				v, _ = loaded.LoadOrStore(path, loadELF(f))
				f.Close()
			}
			lf = v.(*loadedFile)
		}
		if lf.err != nil {
			t.Fatalf("Load(%s): %v", path, lf.err)
		}
		if s.first == ^uint64(0) {
			t.Fatalf("%s: no mapping of file offset 0", path)
		}
		out = append(out, image{path: path, syms: lf.syms,
			mod: Module{Start: s.start, End: s.end, Bias: s.first - lf.base, Table: lf.table}})
	}
	return out
}

func modules(imgs []image) []Module {
	mods := make([]Module, len(imgs))
	for i, im := range imgs {
		mods[i] = im.mod
	}
	return mods
}

// where names the module and function of a frame: "chain:c",
// "libc.so.6:?" for a function without a symbol.
type where struct{ file, fn string }

func (w where) String() string { return w.file + ":" + w.fn }

func locate(imgs []image, f Frame) where {
	pc := f.LookupPC()
	for _, im := range imgs {
		if pc < im.mod.Start || pc >= im.mod.End {
			continue
		}
		link := pc - im.mod.Bias
		i := sort.Search(len(im.syms), func(i int) bool { return im.syms[i].addr > link }) - 1
		if i >= 0 && link < im.syms[i].addr+im.syms[i].size {
			return where{filepath.Base(im.path), im.syms[i].name}
		}
		return where{filepath.Base(im.path), "?"}
	}
	return where{"?", "?"}
}

// stack is one unwound thread.
type stack struct {
	thread
	frames []Frame
	where  []where
	err    error
}

func (s stack) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "thread %d (%s), err=%v:\n", s.tid, s.name, s.err)
	for i, f := range s.frames {
		fmt.Fprintf(&b, "  #%-2d pc=%#x cfa=%#x exact=%v fp=%v %v\n", i, f.PC, f.CFA, f.Exact, f.FramePointer, s.where[i])
	}
	return b.String()
}

// own lists the functions of the frames in the given files, in order.
func (s stack) own(files ...string) []string {
	var out []string
	for _, w := range s.where {
		for _, f := range files {
			if w.file == f {
				out = append(out, w.fn)
			}
		}
	}
	return out
}

func (s stack) framePointerFrames() bool {
	for _, f := range s.frames {
		if f.FramePointer {
			return true
		}
	}
	return false
}

// unwindAll stops the given threads of pid (all if tids is nil) and unwinds
// them.
func unwindAll(t testing.TB, pid int, only []int) ([]stack, []image) {
	t.Helper()
	if only == nil {
		only = tids(t, pid)
	}
	var stacks []stack
	var imgs []image
	err := withStopped(pid, only, func(threads []thread) {
		imgs = images(t, pid)
		mods := modules(imgs)
		for _, th := range threads {
			frames, err := Unwind(th.regs, mods, procMem(pid), 256)
			s := stack{thread: th, frames: frames, err: err}
			for _, f := range frames {
				s.where = append(s.where, locate(imgs, f))
			}
			stacks = append(stacks, s)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return stacks, imgs
}

// start runs a program and registers a cleanup that kills it (SIGKILL) and
// reaps it; close ends its input and checks that it exits with status 0.
func start(t testing.TB, exe string) *fixture.Proc {
	t.Helper()
	p := fixture.Start(t, exe)
	return p
}

func closeAndWait(t *testing.T, p *fixture.Proc) {
	t.Helper()
	if err := p.Close(); err != nil {
		t.Error(err)
	}
}

// checkStack checks a complete unwind: no error, frame 0 in libc (the
// read system call), and exactly the functions want of the given files.
func checkStack(t *testing.T, s stack, want []string, files ...string) {
	t.Helper()
	t.Logf("%v", s)
	if s.err != nil {
		t.Errorf("Unwind: %v\n%v", s.err, s)
		return
	}
	if len(s.where) == 0 || !strings.HasPrefix(s.where[0].file, "libc.so") {
		t.Errorf("frame 0 is not in libc\n%v", s)
	}
	if diff := cmpDiff(want, s.own(files...)); diff != "" {
		t.Errorf("functions of %v (-want +got):\n%s\n%v", files, diff, s)
	}
}

func TestUnwindChain(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			exe := build(t, "chain", v.flags...)
			p := start(t, exe)
			waitReading(t, p.Pid(), 1)
			stacks, _ := unwindAll(t, p.Pid(), nil)
			checkStack(t, stacks[0], []string{"c", "b", "a", "main", "_start"}, filepath.Base(exe))
			closeAndWait(t, p)
		})
	}
}

func TestUnwindThreads(t *testing.T) {
	want := map[string][]string{
		"depth1": {"block", "level1", "thread_main"},
		"depth2": {"block", "level2", "level1", "thread_main"},
		"depth3": {"block", "level3", "level2", "level1", "thread_main"},
		"depth4": {"block", "level4", "level3", "level2", "level1", "thread_main"},
		"main":   {"block", "main", "_start"},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			exe := build(t, "threads", append([]string{"-pthread"}, v.flags...)...)
			p := start(t, exe)
			waitReading(t, p.Pid(), 5)
			stacks, _ := unwindAll(t, p.Pid(), nil)
			seen := map[string]bool{}
			for _, s := range stacks {
				name := s.name
				if s.tid == p.Pid() {
					name = "main"
				}
				w, ok := want[name]
				if !ok {
					t.Errorf("unexpected thread %d named %q", s.tid, s.name)
					continue
				}
				seen[name] = true
				checkStack(t, s, w, filepath.Base(exe))
			}
			if len(seen) != len(want) {
				t.Errorf("unwound threads %v, want %d", seen, len(want))
			}
			closeAndWait(t, p)
		})
	}
}

func TestUnwindRecursion(t *testing.T) {
	want := []string{"block"}
	for range 50 {
		want = append(want, "rec")
	}
	want = append(want, "main", "_start")
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			exe := build(t, "recurse", v.flags...)
			p := start(t, exe)
			waitReading(t, p.Pid(), 1)
			stacks, _ := unwindAll(t, p.Pid(), nil)
			checkStack(t, stacks[0], want, filepath.Base(exe))
			closeAndWait(t, p)
		})
	}
}

// TestUnwindSignalFrame unwinds a thread blocked in a signal handler,
// through glibc's __restore_rt (a CFA expression on the saved context, the
// "S" augmentation) into the interrupted function.
func TestUnwindSignalFrame(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			exe := build(t, "signal", v.flags...)
			p := start(t, exe)
			if reply, err := p.Probe("go"); err != nil || reply != "spinning" {
				t.Fatalf("Probe(go) = %q, %v; want spinning", reply, err)
			}
			if err := unix.Kill(p.Pid(), unix.SIGUSR1); err != nil {
				t.Fatal(err)
			}
			waitReading(t, p.Pid(), 1)
			stacks, _ := unwindAll(t, p.Pid(), nil)
			s := stacks[0]
			checkStack(t, s, []string{"handler", "spin", "main", "_start"}, filepath.Base(exe))
			// Above the handler is __restore_rt, entered by a return (not
			// exact); above it the interrupted frame (exact): spin, or libc's
			// write if the signal came as spin was returning from it.
			for i, w := range s.where {
				if w.fn == "handler" {
					if i+2 >= len(s.frames) || s.frames[i+1].Exact || !strings.HasPrefix(s.where[i+1].file, "libc.so") || !s.frames[i+2].Exact {
						t.Errorf("frames above handler: want libc's __restore_rt (not exact), then an exact frame\n%v", s)
					}
				}
			}
			closeAndWait(t, p)
		})
	}
}

// TestUnwindSharedLibrary unwinds through a frame of a shared library
// between two frames of the program.
func TestUnwindSharedLibrary(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			exe, lib := buildShlib(t, v.flags)
			p := start(t, exe)
			waitReading(t, p.Pid(), 1)
			stacks, _ := unwindAll(t, p.Pid(), nil)
			checkStack(t, stacks[0], []string{"callback", "lib_fn", "main", "_start"}, filepath.Base(exe), filepath.Base(lib))
			closeAndWait(t, p)
		})
	}
}

// TestUnwindVDSO samples a thread that calls clock_gettime in a loop until
// it is stopped inside the vdso, whose Table comes from an ELF image read
// from the target's memory.
func TestUnwindVDSO(t *testing.T) {
	exe := build(t, "clock", "-O2", "-pthread")
	p := start(t, exe)
	waitReading(t, p.Pid(), 1) // the reader thread
	inVDSO, inPLT := 0, 0
	for attempt := 0; attempt < 500 && inVDSO < 3; attempt++ {
		stacks, imgs := unwindAll(t, p.Pid(), []int{p.Pid()})
		s := stacks[0]
		var nocfi *NoCFIError
		if errors.As(s.err, &nocfi) && len(s.frames) == 1 && s.frames[0].Exact {
			// Caught at an instruction that has no CFI on purpose (glibc's
			// clone3 right after the system call, before the main thread
			// is back from creating the reader under load): sample again.
			continue
		}
		if s.err != nil {
			for _, im := range imgs {
				if pc := s.frames[0].PC; pc >= im.mod.Start && pc < im.mod.End {
					t.Logf("frame 0 at %s+%#x (module %#x-%#x, bias %#x)", im.path, pc-im.mod.Bias, im.mod.Start, im.mod.End, im.mod.Bias)
				}
			}
			t.Fatalf("Unwind: %v\n%v", s.err, s)
		}
		own := s.own(filepath.Base(exe))
		if len(own) > 0 && own[0] == "<plt>" {
			inPLT++ // stopped in the PLT stub of clock_gettime
			own = own[1:]
		}
		if diff := cmpDiff([]string{"clock_loop", "main", "_start"}, own); diff != "" {
			t.Fatalf("functions of the program (-want +got):\n%s\n%v", diff, s)
		}
		if s.where[0].file == "[vdso]" {
			inVDSO++
		}
	}
	t.Logf("stopped in the vdso %d times, in the PLT %d times", inVDSO, inPLT)
	if inVDSO == 0 {
		t.Errorf("never stopped the thread inside the vdso")
	}
	closeAndWait(t, p)
}

// TestUnwindFramePointerFallback unwinds a program built without any call
// frame information for its own code: with frame pointers the chain is
// followed and marked; without them the unwind must not claim a complete
// stack that misses functions.
func TestUnwindFramePointerFallback(t *testing.T) {
	noCFI := []string{"-O2", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"}
	t.Run("frame-pointers", func(t *testing.T) {
		t.Parallel()
		exe := build(t, "chain", append(noCFI, "-fno-omit-frame-pointer")...)
		p := start(t, exe)
		waitReading(t, p.Pid(), 1)
		stacks, _ := unwindAll(t, p.Pid(), nil)
		s := stacks[0]
		checkStack(t, s, []string{"c", "b", "a", "main", "_start"}, filepath.Base(exe))
		for i, w := range s.where {
			if (w.fn == "b" || w.fn == "a" || w.fn == "main") && !s.frames[i].FramePointer {
				t.Errorf("frame %d (%v) not marked FramePointer\n%v", i, w, s)
			}
		}
		closeAndWait(t, p)
	})
	t.Run("no-frame-pointers", func(t *testing.T) {
		t.Parallel()
		exe := build(t, "chain", append(noCFI, "-fomit-frame-pointer")...)
		p := start(t, exe)
		waitReading(t, p.Pid(), 1)
		stacks, _ := unwindAll(t, p.Pid(), nil)
		s := stacks[0]
		t.Logf("%v", s)
		var nc *NoCFIError
		switch {
		case errors.As(s.err, &nc):
			if nc.PC != s.frames[len(s.frames)-1].PC {
				t.Errorf("NoCFIError.PC = %#x, want the last frame's PC\n%v", nc.PC, s)
			}
		case s.err == nil && !s.framePointerFrames():
			checkStack(t, s, []string{"c", "b", "a", "main", "_start"}, filepath.Base(exe))
		}
		closeAndWait(t, p)
	})
}
