package agent

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"sort"
	"strconv"
	"syscall"

	"github.com/hotpatch/hotpatch/eligibility"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/buildid"
	"github.com/hotpatch/hotpatch/server/api"
)

// inventorier builds the inventory an enrolled agent reports: the
// processes in its scope, the build-ids of the modules they map (and
// whether the file on disk is still that build, as "hotpatch status"
// tells), and the patches applied in them. It only reads /proc and the
// processes' memory (engine.Status), so it runs beside the agent's loop.
type inventorier struct {
	scope func(pid int) bool
	cache engine.BuildIDCache
	// disk caches the build-id of files on disk by path, checked
	// against the file's identity and modification time.
	disk map[string]diskBuildID
	// check remembers the eligibility findings of executables; host is
	// the host's, taken once (capabilities and kernel features do not
	// change while the agent runs).
	check  eligibility.Checker
	host   []api.Finding
	hostOK bool
}

type diskBuildID struct {
	dev, ino uint64
	mtime    int64
	size     int64
	id       []byte
	err      error
}

func newInventorier(scope func(int) bool) *inventorier {
	return &inventorier{scope: scope, disk: map[string]diskBuildID{}}
}

// build reads the inventory. An error (a failed read of /proc) means it
// is not known: an empty one would tell the server that nothing runs and
// nothing is protected.
func (iv *inventorier) build() (api.Inventory, error) {
	host, _ := os.Hostname()
	inv := api.Inventory{Hostname: host, Kernel: kernelRelease(), Processes: []api.Process{}}
	if !iv.hostOK {
		iv.host, iv.hostOK = problems(eligibility.Host().Findings), true
	}
	inv.Eligibility = iv.host
	pids, err := listPIDs()
	if err != nil {
		return inv, err
	}
	for _, pid := range pids {
		if !iv.scope(pid) {
			continue
		}
		mods, err := engine.ProcessModules(pid, &iv.cache)
		if err != nil {
			if exhausted(err) {
				return inv, procError("reading the modules of process "+strconv.Itoa(pid), err)
			}
			continue // gone, or unreadable for a reason of its own
		}
		exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		p := api.Process{PID: pid, Exe: exe, Modules: make([]api.Module, 0, len(mods))}
		for _, m := range mods {
			if len(m.BuildID) == 0 {
				continue
			}
			p.Modules = append(p.Modules, api.Module{Path: m.Path, BuildID: hex.EncodeToString(m.BuildID), Changed: iv.changedOnDisk(m)})
		}
		if r, err := iv.check.Process(pid); err == nil {
			p.Blockers = problems(r.Findings)
		}
		patched, err := mapsPatch(pid, "")
		if exhausted(err) {
			return inv, procError("reading the maps of process "+strconv.Itoa(pid), err)
		}
		if patched {
			st, err := engine.Status(pid)
			if exhausted(err) {
				return inv, procError("reading the patches of process "+strconv.Itoa(pid), err)
			}
			for _, s := range st {
				p.Patches = append(p.Patches, api.Applied{ID: s.ID, Version: s.Version, State: s.State})
			}
		}
		inv.Processes = append(inv.Processes, p)
	}
	sort.Slice(inv.Processes, func(i, j int) bool { return inv.Processes[i].PID < inv.Processes[j].PID })
	if len(iv.disk) > 4096 {
		iv.disk = map[string]diskBuildID{}
	}
	return inv, nil
}

// changedOnDisk reports whether the file at a module's path is no longer
// the build the process mapped: replaced, removed, or another build.
func (iv *inventorier) changedOnDisk(m engine.Module) bool {
	if m.Deleted {
		return true
	}
	fi, err := os.Stat(m.Path)
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	var dev, ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		dev, ino = uint64(st.Dev), uint64(st.Ino)
	}
	d, ok := iv.disk[m.Path]
	if !ok || d.dev != dev || d.ino != ino || d.mtime != fi.ModTime().UnixNano() || d.size != fi.Size() {
		d = diskBuildID{dev: dev, ino: ino, mtime: fi.ModTime().UnixNano(), size: fi.Size()}
		d.id, d.err = buildid.Read(m.Path)
		iv.disk[m.Path] = d
	}
	return d.err != nil || !bytes.Equal(d.id, m.BuildID)
}

// problems returns the findings that matter to an operator looking at
// what cannot be patched: blocks, and warnings other than those about
// how the running file was built (symbols, relocations, flags: a patch is
// built from a rebuild anyway, see eligibility.Checker).
func problems(fs []eligibility.Finding) []api.Finding {
	var out []api.Finding
	for _, f := range fs {
		if f.Status == eligibility.OK || (f.Status == eligibility.Warn && (f.Check == "symtab" || f.Check == "relocations" || f.Check == "flags")) {
			continue
		}
		out = append(out, api.Finding{Check: f.Check, Status: string(f.Status), Message: f.Message})
	}
	return out
}
