//go:build linux && amd64

package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/unwind"
)

// target is a process prepared for patching: its maps, modules, memory.
type target struct {
	pid  int
	maps []Mapping
	mods []Module
	mem  *memory
	// lastPause is how long the last stop of every thread lasted.
	lastPause time.Duration
	// catch, during an apply, lets whenQuiet catch a busy thread's
	// return.
	catch *catcher
	// waiting is Options.Waiting, called once by whenQuiet.
	waiting func(function string, tid int)
	// cfi is the unwind information of the process's modules, loaded
	// before threads stop; nil means "scan stacks conservatively".
	cfi []unwind.Module
}

func openTarget(pid int) (*target, error) {
	mem, err := openMemory(pid)
	if err != nil {
		return nil, err
	}
	t := &target{pid: pid, mem: mem}
	if err := t.refresh(); err != nil {
		mem.Close()
		return nil, err
	}
	return t, nil
}

// refresh reads the process's mappings and modules again.
func (t *target) refresh() error {
	maps, err := readMaps(t.pid)
	if err != nil {
		return err
	}
	mods, err := modules(t.pid, maps)
	if err != nil {
		return err
	}
	t.maps, t.mods = maps, mods
	return nil
}

func (t *target) close() { t.mem.Close() }

func (t *target) module(p *patch.Patch) (Module, error) {
	if len(t.mods) == 0 {
		// A live process maps at least its executable: one whose
		// maps are empty has released its memory, it is exiting.
		return Module{}, fmt.Errorf("process %d maps no module: %w", t.pid, ErrNoProcess)
	}
	var byName *Module
	for i, m := range t.mods {
		if bytes.Equal(m.BuildID, p.Target.BuildID) {
			return m, nil
		}
		if strings.HasSuffix(m.Path, "/"+p.Target.Name) {
			byName = &t.mods[i]
		}
	}
	e := &BuildIDMismatchError{PID: t.pid, Want: p.Target.BuildID, Name: p.Target.Name}
	if byName != nil {
		e.Got = byName.BuildID
	}
	return Module{}, e
}

// Apply applies a verified patch to process pid. On any error the process
// is left as it was.
func Apply(pid int, p *patch.Patch, opts Options) (*Result, error) {
	existed := alive(pid)
	res, err := apply(pid, p, opts)
	return res, exitedDuring(pid, existed, "apply", err)
}

func apply(pid int, p *patch.Patch, opts Options) (*Result, error) {
	if leaderGone(pid) {
		return nil, fmt.Errorf("process %d: %w", pid, ErrMainThreadExited)
	}
	if err := patch.Verify(p, opts.Trusted); err != nil {
		return nil, err
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	if mode, err := seccompMode(pid); err != nil {
		return nil, err
	} else if mode != 0 {
		return nil, &SeccompError{PID: pid, Mode: mode}
	}
	t, err := openTarget(pid)
	if err != nil {
		return nil, err
	}
	defer t.close()
	t.waiting = opts.Waiting
	mod, err := t.module(p)
	if err != nil {
		return nil, err
	}
	if !opts.AllowUserContexts {
		if m, why := t.userContexts(); m != "" {
			return nil, &UserContextError{PID: pid, Module: m, Reason: why}
		}
	}
	// Finish or undo what a killed hotpatch may have left half done.
	if cleaned, err := t.recoverHalfDone(opts.Timeout); err != nil {
		return nil, fmt.Errorf("process %d: recovering an interrupted apply: %w", pid, err)
	} else if len(cleaned) > 0 {
		if err := t.refresh(); err != nil {
			return nil, err
		}
	}
	applied, wasLost, err := t.dropLost(p.ID, opts.Timeout)
	if err != nil {
		return nil, err
	}
	for _, a := range applied {
		if a.rec.ID == p.ID && a.rec.Version == p.Version {
			return nil, fmt.Errorf("process %d: %s (level %d): %w", pid, p.ID, p.Version, ErrAlreadyApplied)
		}
	}

	// Check the original code and lay the patch out before touching
	// anything.
	if err := t.checkOriginal(p, mod, applied); err != nil {
		return nil, err
	}
	// Unwind information for the consistency check, read before any stop.
	t.cfi = t.unwindModules()
	var result *Result
	for attempt := 1; ; attempt++ {
		im, err := t.layout(p, mod, opts.Digest)
		if err != nil {
			return nil, err
		}
		result, err = t.install(im, p, opts.Timeout)
		// The process's other threads run while the patch is mapped:
		// one of them may have mapped memory (a malloc arena, a thread
		// stack) in the free range just chosen. MAP_FIXED_NOREPLACE
		// refuses that with EEXIST and nothing was changed; choose again
		// from fresh mappings.
		if errors.Is(err, errRangeTaken) && attempt < 4 {
			if rerr := t.refresh(); rerr != nil {
				return nil, rerr
			}
			t.cfi = t.unwindModules()
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	result.WasLost = wasLost
	return result, nil
}

// install maps and fills the patch while only one thread is stopped, then
// writes its redirects once no thread is in a function it replaces. A
// failure unmaps the patch again, unless code may still jump or return
// into it (a *HalfDoneError): then it stays, in the state its record
// describes, for the next run to undo.
func (t *target) install(im *image, p *patch.Patch, timeout time.Duration) (*Result, error) {
	if err := t.mapImage(im, p.ID); err != nil {
		return nil, err
	}
	result, err := t.commit(im, p, timeout)
	if errors.Is(err, ErrHalfDone) {
		return nil, err
	}
	if err != nil {
		if uerr := t.unmap(im.base, im.record.Size); uerr != nil {
			return nil, fmt.Errorf("%w (and unmapping the unused patch failed: %v; the next apply or revert removes it)", err, uerr)
		}
		return nil, err
	}
	return result, nil
}

// lostCleanupWait bounds how long an apply waits for threads to leave a
// lost patch's code before it keeps that code mapped instead.
const lostCleanupWait = 100 * time.Millisecond

// dropLost cleans up every lost mapping of patch id (see lost): the
// mapping goes once no thread runs its code, nothing is written into the
// code. It returns the patches the process still carries that are not
// lost, and whether it cleaned any.
func (t *target) dropLost(id string, timeout time.Duration) ([]appliedPatch, bool, error) {
	recs, err := t.records()
	if err != nil {
		return nil, false, err
	}
	cleaned := false
	for _, a := range recs {
		if a.rec.ID != id || !t.lost(a, recs) {
			continue
		}
		if t.cfi == nil {
			t.cfi = t.unwindModules()
		}
		// Keeping the stale code is harmless (a few KB), so its removal
		// does not hold the apply up for long.
		_, err := t.revert(a, recs, min(timeout, lostCleanupWait))
		var busy *BusyError
		if errors.As(err, &busy) {
			// A thread still runs the stale code: keep it mapped, marked
			// as no longer carried (its redirects are gone anyway), and
			// apply afresh.
			err = t.setState(a.base, stateReverted)
		}
		if err != nil {
			return nil, false, fmt.Errorf("process %d: %s is lost (its redirects are gone from the code) and cleaning it up failed: %w", t.pid, id, err)
		}
		cleaned = true
	}
	if cleaned {
		if err := t.refresh(); err != nil {
			return nil, false, err
		}
		if recs, err = t.records(); err != nil {
			return nil, false, err
		}
		t.cfi = nil
	}
	var out []appliedPatch
	for _, a := range t.live(recs) {
		if a.state != stateReverted {
			out = append(out, a)
		}
	}
	return out, cleaned, nil
}

// checkOriginal checks the SHA-256 of every function the patch replaces,
// as the process has it (under the redirects of the patches it carries,
// their recorded original bytes), against the patch's.
func (t *target) checkOriginal(p *patch.Patch, mod Module, applied []appliedPatch) error {
	for _, f := range p.Functions {
		if !f.Replaces() {
			continue
		}
		got := make([]byte, f.OldSize)
		if err := t.mem.Peek(got, mod.Bias+f.OldAddr); err != nil {
			return err
		}
		undoRedirects(got, mod.Bias+f.OldAddr, applied)
		if sha256.Sum256(got) != f.OldSHA256 {
			return &MismatchError{PID: t.pid, Function: f.Name}
		}
	}
	return nil
}

// layout finds room for the patch near its module, builds its image there
// (relocations resolved in the process's modules) and the record of every
// function and redirect.
func (t *target) layout(p *patch.Patch, mod Module, digest string) (*image, error) {
	hdr, text, ro, data := layoutSizes(p)
	size := hdr + text + ro + data
	base, err := t.freeNear(mod, size)
	if err != nil {
		return nil, err
	}
	res := newResolver(t.pid, t.mods, t.maps)
	im, err := buildImage(p, base, mod.Bias, func(sym, ver string) (uint64, error) {
		a, ifunc, err := res.lookup(sym, ver, Module{})
		if err != nil {
			return 0, err
		}
		if ifunc {
			return t.resolveIFUNC(sym, a)
		}
		return a, nil
	})
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", t.pid, err)
	}
	im.record = Record{
		ID: p.ID, Version: p.Version, Digest: digest, BuildID: hex.EncodeToString(p.Target.BuildID),
		Module: mod.Path, Bias: mod.Bias, Base: base, Size: size, Text: [2]uint64{im.textOff, im.roOff - im.textOff}, Unwind: im.unwind,
		StartupOnly: p.StartupOnly(),
	}
	for _, f := range p.Functions {
		fi := FuncInfo{Name: f.Name}
		if f.Replaces() {
			fi.OldAddr, fi.OldSize = mod.Bias+f.OldAddr, f.OldSize
		}
		if f.NewSize > 0 {
			fi.NewAddr, fi.NewSize = base+im.textOff+f.NewOffset, f.NewSize
		}
		im.record.Functions = append(im.record.Functions, fi)
		if !f.Redirected() {
			continue
		}
		rd, err := t.redirect(f, mod.Bias+f.OldAddr, fi.NewAddr)
		if err != nil {
			return nil, err
		}
		im.record.Redirects = append(im.record.Redirects, rd)
	}
	return im, nil
}

// redirect plans the jump at an original function's entry. A function that
// starts with endbr64 keeps it: the jump goes after it.
func (t *target) redirect(f patch.Function, old, newAddr uint64) (Redirect, error) {
	site := old
	head := make([]byte, 4)
	if err := t.mem.Peek(head, old); err != nil {
		return Redirect{}, err
	}
	if bytes.Equal(head, []byte{0xf3, 0x0f, 0x1e, 0xfa}) {
		site += 4
	}
	room := old + f.OldSize - site
	var jmp []byte
	if d := int64(newAddr) - int64(site+5); d >= -1<<31 && d < 1<<31 {
		jmp = []byte{0xe9, 0, 0, 0, 0}
		putUint32(jmp[1:], uint32(int32(d)))
	} else {
		jmp = []byte{0xff, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		putUint64(jmp[6:], newAddr)
	}
	if uint64(len(jmp)) > room {
		return Redirect{}, fmt.Errorf("function %s has %d bytes after its entry, too short for a %d-byte redirect", f.Name, room, len(jmp))
	}
	old2 := make([]byte, len(jmp))
	if err := t.mem.Peek(old2, site); err != nil {
		return Redirect{}, err
	}
	return Redirect{Function: f.Name, Site: site, Old: old2, New: jmp}, nil
}

func putUint32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
func putUint64(b []byte, v uint64) {
	putUint32(b, uint32(v))
	putUint32(b[4:], uint32(v>>32))
}

// undoRedirects puts back, in a copy of original code read from the
// process, the bytes that applied patches' redirects replaced, newest
// last, so a function already patched hashes as the original.
func undoRedirects(code []byte, addr uint64, applied []appliedPatch) {
	sort.Slice(applied, func(i, j int) bool { return applied[i].rec.AppliedAt > applied[j].rec.AppliedAt })
	for _, a := range applied {
		for _, rd := range a.rec.Redirects {
			if rd.Site >= addr && rd.Site+uint64(len(rd.Old)) <= addr+uint64(len(code)) {
				copy(code[rd.Site-addr:], rd.Old)
			}
		}
	}
}

// freeNear finds an unmapped, page-aligned range of size bytes from which
// every byte of the module is within ±2 GiB (rel32 reach).
func (t *target) freeNear(mod Module, size uint64) (uint64, error) {
	const reach = 1<<31 - 1<<20
	lo := uint64(0x10000)
	if mod.End > reach {
		lo = max(lo, mod.End-reach)
	}
	hi := mod.Start + reach - size
	type gap struct{ start, end uint64 }
	var gaps []gap
	prev := lo
	for _, m := range t.maps {
		if m.Start > prev {
			gaps = append(gaps, gap{prev, m.Start})
		}
		prev = max(prev, m.End)
		if m.Path == "[heap]" {
			// Leave the heap room to grow with brk.
			prev = max(prev, m.End+256<<20)
		}
	}
	gaps = append(gaps, gap{prev, 1 << 47})
	// Prefer the gap closest after the module, then before it.
	best, found := uint64(0), false
	dist := func(a uint64) uint64 {
		if a >= mod.End {
			return a - mod.End
		}
		return mod.Start - a
	}
	for _, g := range gaps {
		// Keep a guard page on each side.
		s := alignUp(max(g.start, lo)+pageSize, pageSize)
		e := min(g.end, hi+size)
		if e < pageSize || s+size > e-pageSize || s > hi {
			continue
		}
		cand := s
		if g.end <= mod.Start { // before the module: as close to it as possible
			cand = (e - pageSize - size) &^ (pageSize - 1)
		}
		if !found || dist(cand) < dist(best) {
			best, found = cand, true
		}
	}
	if !found {
		return 0, fmt.Errorf("process %d: no free address range of %d bytes within 2 GiB of %s", t.pid, size, mod.Path)
	}
	return best, nil
}

// testHookBeforeMap, set by tests only, runs in mapImage just before the
// patch is mapped (to take the chosen range, as another thread might).
var testHookBeforeMap func(s *session, base, size uint64)

// errRangeTaken reports that the process mapped something in the range
// chosen for the patch after it was chosen.
var errRangeTaken = errors.New("the process mapped that range meanwhile")

// mapImage creates the patch mapping (a memfd named hotpatch:ID, so
// /proc/PID/maps shows it), fills it and sets its protections, with one
// thread of the process stopped to make the system calls. The header page
// is read-only to the program (the engine writes it through /proc/PID/mem)
// and a mapping becomes executable only once it is filled: a killed
// hotpatch's half-made mapping is recognised by that and removed.
func (t *target) mapImage(im *image, id string) error {
	if err := im.writeHeader(statePreparing); err != nil {
		return err
	}
	return t.withSyscalls(func(s *session) error {
		name, err := s.remoteString(mappingPrefix + id)
		if err != nil {
			return err
		}
		fd, err := s.syscall(unix.SYS_MEMFD_CREATE, name, unix.MFD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("process %d: memfd_create: %w", t.pid, err)
		}
		defer s.syscall(unix.SYS_CLOSE, fd)
		size := uint64(len(im.data))
		if _, err := s.syscall(unix.SYS_FTRUNCATE, fd, size); err != nil {
			return fmt.Errorf("process %d: ftruncate: %w", t.pid, err)
		}
		if testHookBeforeMap != nil {
			testHookBeforeMap(s, im.base, size)
		}
		addr, err := s.syscall(unix.SYS_MMAP, im.base, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED_NOREPLACE, fd, 0)
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("process %d: mapping the patch at %#x: %w (%w)", t.pid, im.base, errRangeTaken, err)
		}
		if err != nil {
			return fmt.Errorf("process %d: mapping the patch at %#x: %w", t.pid, im.base, err)
		}
		if addr != im.base {
			s.syscall(unix.SYS_MUNMAP, addr, size)
			return fmt.Errorf("process %d: the kernel mapped the patch at %#x, not %#x", t.pid, addr, im.base)
		}
		fail := func(err error) error {
			s.syscall(unix.SYS_MUNMAP, addr, size)
			return err
		}
		if err := t.mem.Poke(im.data, addr); err != nil {
			return fail(err)
		}
		prots := []struct {
			off, end uint64
			prot     uint64
		}{
			{0, im.textOff, unix.PROT_READ},
			{im.textOff, im.roOff, unix.PROT_READ | unix.PROT_EXEC},
			{im.roOff, im.dataOff, unix.PROT_READ},
			{im.dataOff, im.end, unix.PROT_READ | unix.PROT_WRITE},
		}
		for _, p := range prots {
			if p.end == p.off {
				continue
			}
			if _, err := s.syscall(unix.SYS_MPROTECT, addr+p.off, p.end-p.off, p.prot); err != nil {
				return fail(fmt.Errorf("process %d: mprotect: %w", t.pid, err))
			}
		}
		// Have the kernel make the private copy of each code page a
		// redirect will go to now, by writing back the bytes that are
		// there, so the writes while every thread is stopped copy no
		// page. (No other hotpatch writes code while this session holds
		// the main thread.)
		for _, rd := range im.record.Redirects {
			cur := make([]byte, len(rd.Old))
			if t.mem.Peek(cur, rd.Site) == nil {
				t.mem.Poke(cur, rd.Site)
			}
		}
		return nil
	})
}

// mappingPrefix names patch mappings: /proc/PID/maps shows
// "/memfd:hotpatch:ID (deleted)".
const mappingPrefix = "hotpatch:"

// unmap removes a patch mapping.
func (t *target) unmap(base, size uint64) error {
	return t.withSyscalls(func(s *session) error {
		_, err := s.syscall(unix.SYS_MUNMAP, base, size)
		return err
	})
}
