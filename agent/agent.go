package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/patch"
)

// Agent keeps the patches of a directory applied. Run it with Run; all
// its state is owned by the goroutine running Run, and the engine work
// runs in a few worker goroutines whose results come back to it. Enrolled
// with a server, a serverLink (server.go) keeps a second patch directory,
// STATE/server/, and tells Run when it changed.
type Agent struct {
	cfg Config
	// serverDir is STATE/server/ when enrolled ("" offline).
	serverDir string
	// id is the identity of an enrolled agent (nil before enrollment).
	id      *identity
	trusted []patch.PublicKey
	log     *eventLog
	st      *persisted
	scope   string // the PID namespace the agent is limited to ("" for all)
	self    int

	desired map[string]*desiredPatch // by patch id
	// gen counts the changes of the desired patches.
	gen   int
	cache engine.BuildIDCache
	procs map[int]*procInfo
	// busyPIDs are processes with an engine job running: one at a time.
	busyPIDs map[int]bool
	jobs     chan job
	results  chan jobResult
	// stop is closed when the agent stops: workers take no new job.
	stop    chan struct{}
	metrics *metrics
	// faults are the kernel's recent reports of faults, by pid, to give
	// crash events their details (written by the kernel-log reader).
	faultMu sync.Mutex
	faults  map[int]fault
	// probed brings back the results of health probes.
	probed chan probeResult
	// fellBack counts the restart commands that ran (fallback.go).
	fellBack chan struct{}
	// alarm reports failed reads of /proc (see procfs.go).
	alarm *procAlarm
	// ctx is Run's context, done when the agent stops (probes and
	// restart commands derive theirs from it).
	ctx context.Context
	// crashes wait for the kernel's report of their fault.
	crashes []pendingCrash
	// unrecorded are the applies the last run started and did not
	// record the end of, left half done in the process (by start time).
	unrecorded map[pidPatch]time.Time
	// reported are the files (path and digest) already reported as
	// refused, overridden or damaged.
	reported map[string]bool
}

type desiredPatch struct {
	p      *patch.Patch
	file   string
	digest string
}

// procInfo is what the agent knows of one process in its scope.
type procInfo struct {
	start uint64 // start time from /proc/PID/stat, to tell a reused pid
	exe   string
	// seen is the process's address-space size and the agent's desired
	// generation when its modules were last read: a rescan reads them
	// again only if either changed (a dlopen maps more).
	seenVsize uint64
	seenGen   int
	// retry holds, by patch id, when an apply is due again and how many
	// times it was refused as busy.
	retry map[string]*retryState
	// quickLooks counts the quick looks left at a program that just
	// exec'd (its libraries are still being loaded), the next at
	// nextLook.
	quickLooks int
	nextLook   time.Time
	// patched is set while the process maps a patch: every rescan then
	// checks that its patches are still in effect (checkLost).
	patched bool
	// lost are the patches found lost in it (reported once).
	lost map[string]bool
}

type retryState struct {
	at    time.Time
	delay time.Duration
	busy  int
	// fellBack is set once the fallback ran for this process.
	fellBack bool
}

// New checks the configuration and prepares an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("hotpatchd must run as root: it attaches to other users' processes with ptrace and listens to the kernel's process events")
	}
	a := &Agent{
		cfg: cfg, self: os.Getpid(), desired: map[string]*desiredPatch{}, procs: map[int]*procInfo{},
		busyPIDs: map[int]bool{}, jobs: make(chan job), results: make(chan jobResult, 64), stop: make(chan struct{}),
		faults: map[int]fault{}, probed: make(chan probeResult, 64), fellBack: make(chan struct{}, 16), reported: map[string]bool{},
		unrecorded: map[pidPatch]time.Time{},
	}
	for _, f := range cfg.Trust {
		k, err := patch.ReadPublicKey(f)
		if err != nil {
			return nil, err
		}
		a.trusted = append(a.trusted, k)
	}
	sys, _ := filepath.Glob("/etc/hotpatch/trusted/*.pub")
	for _, f := range sys {
		if k, err := patch.ReadPublicKey(f); err == nil {
			a.trusted = append(a.trusted, k)
		}
	}
	if len(a.trusted) == 0 {
		return nil, errors.New("no trusted key: give --trust KEY.pub (or put keys in /etc/hotpatch/trusted)")
	}
	if cfg.PIDNamespace != "" {
		ns, err := os.Readlink(cfg.PIDNamespace)
		if err != nil {
			return nil, fmt.Errorf("pid namespace: %v", err)
		}
		a.scope = ns
	}
	if cfg.PatchDir != "" {
		if st, err := os.Stat(cfg.PatchDir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("patch directory %s: not a directory", cfg.PatchDir)
		}
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	if cfg.Server != "" {
		var err error
		if a.id, err = loadIdentity(cfg.StateDir); err != nil {
			return nil, err
		}
		if a.id == nil && (cfg.EnrollToken == "" && cfg.EnrollTokenFile == "" || cfg.CA == "") {
			return nil, fmt.Errorf("not enrolled yet (no identity in %s): give --enroll-token-file (or HOTPATCH_ENROLL_TOKEN) and --ca (the server's ca.pem) for the first start",
				filepath.Join(cfg.StateDir, identityDir))
		}
		if cfg.CA != "" {
			if _, err := os.Stat(cfg.CA); err != nil {
				return nil, fmt.Errorf("server CA: %v", err)
			}
		}
		a.serverDir = filepath.Join(cfg.StateDir, serverDirName)
		if err := os.MkdirAll(a.serverDir, 0o700); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Run runs the agent until ctx is done.
func (a *Agent) Run(ctx context.Context) error {
	var out io.Writer = os.Stdout
	if a.cfg.Quiet {
		out = nil
	}
	var err error
	if a.log, err = openEventLog(a.cfg.StateDir, out); err != nil {
		return err
	}
	defer a.log.close()
	a.alarm = newProcAlarm(a.log)
	var torn *tornStateError
	if a.st, err = loadState(a.cfg.StateDir); errors.As(err, &torn) {
		a.rebuildState(torn)
	} else if err != nil {
		return fmt.Errorf("state %s: %v", a.cfg.StateDir, err)
	}
	var link *serverLink
	if a.cfg.Server != "" {
		link = newServerLink(a)
		a.log.forward = link.out.push
	}
	a.metrics = newMetrics(a)
	if a.cfg.MetricsListen != "" {
		stop, err := a.metrics.serve(a.cfg.MetricsListen)
		if err != nil {
			return err
		}
		defer stop()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.ctx = ctx
	for range 4 {
		go a.worker()
	}
	execs, exits, lost := a.watchProcesses(ctx)
	a.watchFaults(ctx)
	dirChanged := a.watchDir(ctx)
	// serverChanged stays nil offline (never ready).
	var serverChanged <-chan struct{}
	if link != nil {
		serverChanged = link.changed
		// The link outlives the loop a little, to send the last events
		// (stopped).
		linkCtx, stopLink := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { link.run(linkCtx); close(done) }()
		defer func() { stopLink(); <-done }()
	}

	msg := fmt.Sprintf("patch dir %s, %d trusted keys, scope %s", orNone(a.cfg.PatchDir), len(a.trusted), orAll(a.scope))
	if a.cfg.Server != "" {
		device := "not enrolled yet"
		if a.id != nil {
			device = "device " + a.id.DeviceID
		}
		msg += fmt.Sprintf(", server %s (%s)", a.cfg.Server, device)
	}
	a.recordInterrupted()
	a.log.add(Event{Type: "started", Message: msg})
	a.syncPatchDir()
	a.rescan()

	rescan := time.NewTicker(a.cfg.Rescan.D())
	defer rescan.Stop()
	// wake fires when the next scheduled thing is due (a second look at
	// a new process, a retry, a probe); the agent sleeps otherwise.
	wake := time.NewTimer(time.Millisecond)
	defer wake.Stop()
	for {
		select {
		case <-ctx.Done():
			a.drain()
			a.log.add(Event{Type: "stopped"})
			return nil
		case pid := <-execs:
			a.newProcess(pid)
		case ev := <-exits:
			a.exited(ev)
		case <-lost:
			a.log.add(Event{Type: "events_lost", Message: "the kernel dropped process events; rescanning"})
			a.rescan()
		case r := <-a.probed:
			a.probeDone(r)
		case <-a.fellBack:
			a.metrics.fallbacks++
		case <-dirChanged:
			// A new patch reaches the running processes at once, as a
			// removal does, not at the next rescan.
			gen := a.gen
			a.syncPatchDir()
			if a.gen != gen {
				a.rescan()
			}
		case <-serverChanged:
			a.syncPatchDir()
			a.rescan()
		case <-rescan.C:
			a.syncPatchDir()
			a.rescan()
		case r := <-a.results:
			a.finished(r)
		case <-wake.C:
		}
		// After anything: run what is due and sleep until the next.
		next := a.due()
		if a.cfg.MetricsListen != "" {
			a.metrics.render()
			next = min(next, time.Second)
		}
		wake.Reset(max(next, time.Millisecond))
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func orAll(s string) string {
	if s == "" {
		return "all processes"
	}
	return s
}

// drain stops the workers and waits for the engine jobs in flight, so
// that none is cut off by the agent's own exit (a kill is handled by the
// engine's recovery); jobs not started yet are dropped.
func (a *Agent) drain() {
	close(a.stop)
	for len(a.busyPIDs) > 0 {
		a.finished(<-a.results)
	}
}

// syncPatchDir reads the patch directories (the local one, then the
// server's STATE/server/ when enrolled): new or changed files become
// desired, files gone are reverted everywhere. A local patch wins over a
// server patch with the same id.
func (a *Agent) syncPatchDir() {
	type entry struct {
		file   string
		server bool
	}
	var files []entry
	ok := true
	for _, dir := range []string{a.cfg.PatchDir, a.serverDir} {
		if dir == "" {
			continue
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			a.log.add(Event{Type: "patch_refused", File: dir, Error: err.Error()})
			ok = false
			continue
		}
		for _, e := range ents {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".hpatch") {
				files = append(files, entry{filepath.Join(dir, e.Name()), dir == a.serverDir})
			}
		}
	}
	if !ok {
		return // an unreadable directory is not an empty one
	}
	seen := map[string]bool{}
	local := map[string]string{} // patch id → local file
	for _, f := range files {
		file := f.file
		data, err := os.ReadFile(file)
		if err != nil {
			continue // removed meanwhile
		}
		digest := patch.FileDigest(data)
		if d := a.findByFile(file); d != nil && d.digest == digest {
			seen[d.p.ID] = true
			if !f.server {
				local[d.p.ID] = file
			}
			continue
		}
		p, err := patch.Load(data)
		if err == nil {
			err = patch.Verify(p, a.trusted)
		}
		if err != nil {
			if id, ok := a.keepLastGood(file, digest, err); ok {
				seen[id] = true
				if !f.server {
					local[id] = file
				}
				continue
			}
			if a.reportOnce(file, digest) {
				a.log.add(Event{Type: "patch_refused", File: file, Error: err.Error()})
			}
			continue
		}
		if f.server && local[p.ID] != "" {
			if a.reportOnce(file, digest) {
				a.log.add(Event{Type: "patch_overridden", File: file, Patch: p.ID, Version: p.Version,
					Message: "the server's patch is not applied: the local patch directory has one with the same id, " + local[p.ID]})
			}
			continue
		}
		if other, ok := a.desired[p.ID]; ok && other.file != file && seen[p.ID] {
			a.log.add(Event{Type: "patch_refused", File: file, Patch: p.ID, Error: "another file in the patch directory has the same patch id: " + other.file})
			continue
		}
		seen[p.ID] = true
		if !f.server {
			local[p.ID] = file
		}
		a.desired[p.ID] = &desiredPatch{p: p, file: file, digest: digest}
		a.gen++
		if b, ok := a.st.Bad[p.ID]; ok && b.Digest != digest {
			delete(a.st.Bad, p.ID) // a new file for a bad patch gets a new chance
		}
		a.st.Managed[p.ID] = managed{Version: p.Version, Digest: digest, File: file}
		a.save()
		a.keep(p.ID, data)
		a.log.add(Event{Type: "patch_loaded", File: file, Patch: p.ID, Version: p.Version,
			Message: fmt.Sprintf("%d functions, target %s", len(p.Functions), p.Target.Name)})
		for _, pi := range a.procs {
			delete(pi.retry, p.ID)
		}
	}
	for id, d := range a.desired {
		if !seen[id] {
			delete(a.desired, id)
			a.gen++
			a.log.add(Event{Type: "patch_removed", File: d.file, Patch: id})
		}
	}
	// Revert what the agent manages but is no longer desired, also what
	// was removed while the agent was down.
	for id := range a.st.Managed {
		if _, ok := a.desired[id]; ok {
			continue
		}
		pids, err := a.carriers(id)
		if err != nil {
			// Not knowing who carries it is not knowing that nobody
			// does: keep managing it, the next rescan tries again.
			a.alarm.failed("revert of "+id, "still managed; it is reverted once /proc can be read", err)
			continue
		}
		a.alarm.ok("revert of " + id)
		for _, pid := range pids {
			a.submit(job{kind: jobRevert, pid: pid, id: id})
		}
		if len(pids) == 0 {
			delete(a.st.Managed, id)
			delete(a.st.Bad, id)
			a.save()
			os.Remove(a.keptFile(id))
		}
	}
}

// reportOnce reports whether a file that is refused (or overridden, or
// damaged) is new in that state, so that it is reported once, not at
// every rescan.
func (a *Agent) reportOnce(file, digest string) bool {
	key := file + "\x00" + digest
	if a.reported[key] {
		return false
	}
	if len(a.reported) > 4096 {
		a.reported = map[string]bool{}
	}
	a.reported[key] = true
	return true
}

// keptDir is the state directory's folder of the last good version of
// each managed patch (ID.hpatch), kept so that a damaged file cannot take
// a fix away, and so that a torn state.json can be rebuilt.
const keptDir = "patches"

func (a *Agent) keptFile(id string) string {
	return filepath.Join(a.cfg.StateDir, keptDir, id+".hpatch")
}

// keep writes the good bytes of a managed patch into the state directory.
func (a *Agent) keep(id string, data []byte) {
	if old, err := os.ReadFile(a.keptFile(id)); err == nil && bytes.Equal(old, data) {
		return
	}
	err := os.MkdirAll(filepath.Join(a.cfg.StateDir, keptDir), 0o700)
	if err == nil {
		err = writeFileAtomic(a.keptFile(id), data, 0o600)
	}
	if err != nil {
		a.log.add(Event{Type: "state_failed", Patch: id, Error: err.Error(), Message: "keeping a copy of the patch"})
	}
}

// loadKept loads the kept copy of a managed patch, checked against the
// digest the state recorded for it and the trusted keys.
func (a *Agent) loadKept(id, digest string) (*patch.Patch, error) {
	data, err := os.ReadFile(a.keptFile(id))
	if err != nil {
		return nil, err
	}
	if digest != "" && patch.FileDigest(data) != digest {
		return nil, fmt.Errorf("the kept copy of %s is not the version last loaded", id)
	}
	p, err := patch.Load(data)
	if err == nil {
		err = patch.Verify(p, a.trusted)
	}
	if err == nil && p.ID != id {
		err = fmt.Errorf("the kept copy of %s holds patch %s", id, p.ID)
	}
	return p, err
}

// keepLastGood handles a file that does not load or verify: if it held a
// patch the agent manages (a non-atomic copy in progress, a full disk, a
// truncation), the last good version stays in force and the file is
// reported as damaged (patch_damaged); it returns that patch's id. At a
// start, the last good version is the copy kept in the state directory.
// A file that never held a good patch is not damaged but refused (false).
func (a *Agent) keepLastGood(file, digest string, cause error) (string, bool) {
	d := a.findByFile(file)
	if d == nil {
		for id, m := range a.st.Managed {
			if m.File != file {
				continue
			}
			if _, taken := a.desired[id]; taken {
				break
			}
			p, err := a.loadKept(id, m.Digest)
			if err != nil {
				a.log.add(Event{Type: "state_failed", Patch: id, File: file, Error: err.Error(), Message: "no good copy of a damaged patch file"})
				break
			}
			d = &desiredPatch{p: p, file: file, digest: m.Digest}
			a.desired[id] = d
			a.gen++
			break
		}
	}
	if d == nil {
		return "", false
	}
	if a.reportOnce(file, digest) {
		a.log.add(Event{Type: "patch_damaged", File: file, Patch: d.p.ID, Version: d.p.Version, Error: cause.Error(),
			Message: "the file does not load; the last good version stays in force (kept in the state directory): write a good file, or remove it to revert the patch"})
	}
	return d.p.ID, true
}

func (a *Agent) findByFile(file string) *desiredPatch {
	for _, d := range a.desired {
		if d.file == file {
			return d
		}
	}
	return nil
}

// rescan looks at every process in scope.
func (a *Agent) rescan() {
	pids, err := listPIDs()
	if err != nil {
		a.alarm.failed("rescan", "processes not looked at (what the agent knows of them is kept)", err)
		return
	}
	a.alarm.ok("rescan")
	a.sweepBad()
	alive := map[int]bool{}
	for _, pid := range pids {
		alive[pid] = true
		if pi := a.procs[pid]; pi != nil && pi.patched {
			a.checkLost(pid, pi)
		}
		a.look(pid, false)
	}
	for pid := range a.procs {
		if !alive[pid] {
			delete(a.procs, pid)
		}
	}
	a.metrics.processes = len(a.procs)
}

// checkLost reads the patches of a patched process and handles the ones
// that are lost: a redirect of the patch is no longer in the code (its
// library was unloaded, or unloaded and loaded again with its original
// code), so the fix is not in effect although the patch is still mapped.
// It is reported once (patch_lost; the inventory reports its state, which
// the server counts as not protected), and a desired patch is applied
// again: engine.Apply cleans the stale mapping and record first.
func (a *Agent) checkLost(pid int, pi *procInfo) {
	if a.busyPIDs[pid] {
		return
	}
	if start, ok := startTime(pid); !ok || start != pi.start {
		return // gone, or another process now: the next look sees it
	}
	st, err := engine.Status(pid)
	if err != nil {
		return
	}
	pi.patched = len(st) > 0
	var mods []engine.Module // read only if needed
	for _, s := range st {
		if s.State != engine.StateLost {
			delete(pi.lost, s.ID)
			continue
		}
		if mods == nil {
			mods, _ = engine.ProcessModules(pid, &a.cache)
		}
		if !a.reportLost(pid, pi, s, mods) {
			continue
		}
		if r := pi.retry[s.ID]; r != nil && time.Now().Before(r.at) {
			continue
		}
		d := a.desired[s.ID]
		a.submit(job{kind: jobApply, pid: pid, id: s.ID, p: d.p, digest: d.digest})
		return // one job per process at a time
	}
}

// reportLost records a lost patch of a process once, and reports whether
// it is to be applied again (desired, not bad, its target mapped).
func (a *Agent) reportLost(pid int, pi *procInfo, s engine.Applied, mods []engine.Module) bool {
	d := a.desired[s.ID]
	_, bad := a.st.Bad[s.ID]
	again := d != nil && !bad && mapsBuildID(mods, d.p.Target.BuildID)
	if !pi.lost[s.ID] {
		pi.lost[s.ID] = true
		msg := "a redirect of the patch is no longer in the code (its library was unloaded or reloaded): the fix is not in effect"
		switch {
		case again:
			msg += "; applying it again"
		case d != nil && !bad:
			msg += "; its target is not mapped any more, nothing to apply it to"
		}
		a.log.add(Event{Type: "patch_lost", PID: pid, Exe: pi.exe, Patch: s.ID, Version: s.Version, Message: msg})
	}
	return again
}

// newProcess handles an exec: the process is looked at now and again a
// few times while its libraries load.
func (a *Agent) newProcess(pid int) {
	delete(a.procs, pid) // a new program: forget what was known of the pid
	if pi := a.track(pid); pi != nil {
		// The first look a moment after the exec: the dynamic linker is
		// still loading and relocating the libraries at the exec event.
		pi.quickLooks = quickLooks
		pi.nextLook = time.Now().Add(firstLookDelay)
	}
}

// firstLookDelay is how long after its exec a new program is first looked
// at; quickLooks is how many looks it gets, 10 ms further apart each time
// (some half a second in all), before it is left to the rescans.
const (
	firstLookDelay = 20 * time.Millisecond
	quickLooks     = 8
)

// track returns what the agent knows of a process in its scope, making
// the record if needed (nil if the process is gone or out of scope).
func (a *Agent) track(pid int) *procInfo {
	start, _, ok := procStat(pid)
	if !ok {
		return nil
	}
	pi := a.procs[pid]
	if pi != nil && pi.start != start {
		pi = nil // the pid was reused
	}
	if pi == nil {
		if !a.inScope(pid) {
			return nil
		}
		exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		pi = &procInfo{start: start, exe: exe, retry: map[string]*retryState{}, lost: map[string]bool{}}
		pi.patched, _ = mapsPatch(pid, "")
		a.procs[pid] = pi
	}
	return pi
}

// look records a process in scope and submits the applies it needs. A
// process whose address space and the desired patches have not changed
// since the last look is skipped, unless force.
func (a *Agent) look(pid int, force bool) *procInfo {
	pi := a.track(pid)
	if pi == nil {
		return nil
	}
	_, vsize, _ := procStat(pid)
	if len(a.desired) == 0 || a.busyPIDs[pid] {
		return pi
	}
	if !force && pi.seenVsize == vsize && pi.seenGen == a.gen {
		return pi
	}
	pi.seenVsize, pi.seenGen = vsize, a.gen
	mods, err := engine.ProcessModules(pid, &a.cache)
	if err != nil {
		return pi
	}
	var applied map[string]bool // read from the process only when needed
	for _, id := range a.desiredIDs() {
		d := a.desired[id]
		if _, bad := a.st.Bad[id]; bad || !mapsBuildID(mods, d.p.Target.BuildID) {
			continue
		}
		if applied == nil {
			applied = a.appliedIDs(pid, pi, mods)
		}
		if applied[id] {
			continue
		}
		if r := pi.retry[id]; r != nil && time.Now().Before(r.at) {
			continue
		}
		a.submit(job{kind: jobApply, pid: pid, id: id, p: d.p, digest: d.digest})
		return pi // one job per process at a time; the next look does the rest
	}
	return pi
}

func (a *Agent) desiredIDs() []string {
	ids := make([]string, 0, len(a.desired))
	for id := range a.desired {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// appliedIDs reads the patches in effect in a process (a lost one is
// reported, and then applied again as any patch not in effect).
func (a *Agent) appliedIDs(pid int, pi *procInfo, mods []engine.Module) map[string]bool {
	out := map[string]bool{}
	st, _ := engine.Status(pid)
	for _, s := range st {
		switch s.State {
		case engine.StateApplied:
			out[s.ID] = true
			delete(pi.lost, s.ID)
		case engine.StateLost:
			a.reportLost(pid, pi, s, mods)
		}
	}
	return out
}

func mapsBuildID(mods []engine.Module, id []byte) bool {
	for _, m := range mods {
		if bytes.Equal(m.BuildID, id) {
			return true
		}
	}
	return false
}

// inScope reports whether pid is a process the agent looks after: not a
// kernel thread, and in its PID namespace when it has one.
func (a *Agent) inScope(pid int) bool {
	if a.scope != "" {
		ns, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/pid")
		if err != nil || ns != a.scope {
			return false
		}
	}
	// Kernel threads have no memory map.
	st, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/exe")
	return err == nil && !st.IsDir()
}

// startTime reads a process's start time (field 22 of /proc/PID/stat).
func startTime(pid int) (uint64, bool) {
	start, _, ok := procStat(pid)
	return start, ok
}

// procStat reads a process's start time and address-space size (fields 22
// and 23 of /proc/PID/stat).
func procStat(pid int) (start, vsize uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 21 {
		return 0, 0, false
	}
	start, err1 := strconv.ParseUint(f[19], 10, 64)
	vsize, err2 := strconv.ParseUint(f[20], 10, 64)
	return start, vsize, err1 == nil && err2 == nil
}

// due runs what is due (quick second looks at new processes, retries,
// probes, the end of health windows) and returns how long until the next.
func (a *Agent) due() time.Duration {
	now := time.Now()
	next := now.Add(time.Minute)
	for pid, pi := range a.procs {
		if pi.quickLooks > 0 && !now.Before(pi.nextLook) {
			pi.quickLooks--
			pi.nextLook = now.Add(time.Duration(quickLooks+1-pi.quickLooks) * 10 * time.Millisecond)
			a.look(pid, true)
		}
		if pi.quickLooks > 0 && pi.nextLook.Before(next) {
			next = pi.nextLook
		}
		for _, r := range pi.retry {
			if r.at.IsZero() {
				continue
			}
			if !now.Before(r.at) {
				r.at = time.Time{}
				a.look(pid, true)
			} else if r.at.Before(next) {
				next = r.at
			}
		}
	}
	if w := a.checkWatches(now); !w.IsZero() && w.Before(next) {
		next = w
	}
	if c := a.dueCrashes(now); !c.IsZero() && c.Before(next) {
		next = c
	}
	return time.Until(next)
}

func (a *Agent) save() {
	if err := a.st.save(a.cfg.StateDir); err != nil {
		a.log.add(Event{Type: "state_failed", Error: err.Error()})
	}
}

// fileDigest is the SHA-256 of a file, as patch.FileDigest gives it.
func fileDigest(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// signalName names a signal as "SIGSEGV".
func signalName(s syscall.Signal) string {
	n := strings.ToUpper(strings.ReplaceAll(s.String(), " ", "_"))
	for name, sig := range map[string]syscall.Signal{"SIGSEGV": syscall.SIGSEGV, "SIGBUS": syscall.SIGBUS, "SIGILL": syscall.SIGILL,
		"SIGFPE": syscall.SIGFPE, "SIGABRT": syscall.SIGABRT, "SIGTRAP": syscall.SIGTRAP, "SIGSYS": syscall.SIGSYS, "SIGKILL": syscall.SIGKILL, "SIGTERM": syscall.SIGTERM} {
		if s == sig {
			return name
		}
	}
	return n
}
