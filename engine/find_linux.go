//go:build linux && amd64

package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// FindProcesses returns the pids of every process on the host that maps a
// module with the given build-id (the --all of the CLI); when buildID is
// nil, those that carry the patch named id, or any patch when id is "".
// It reads /proc only; it does not attach to anything. When it finds none
// and some processes could not be looked at for lack of privilege, it
// returns an error wrapping ErrPermission instead of an empty list: "none"
// would not be known.
func FindProcesses(buildID []byte, id string) (out []int, err error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	cache := map[string][]byte{} // dev:inode -> build-id
	denied, deniedFiles := 0, 0
	defer func() {
		if len(out) > 0 || err != nil {
			return
		}
		// A caller with the privileges may still be denied a process or
		// two (one with capabilities beyond its own: a container's
		// manager); only a caller without them is told it cannot know.
		ptrace, mapFiles := privileges()
		switch {
		case deniedFiles > 0 && !mapFiles:
			err = fmt.Errorf("cannot read the files that %d processes map through /proc/PID/map_files: %w (%s)", deniedFiles, ErrPermission, needMapFiles)
		case denied > 0 && !ptrace:
			err = fmt.Errorf("cannot read the memory maps of %d processes: %w (%s)", denied, ErrPermission, needProc)
		}
	}()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		maps, err := readMaps(pid)
		if errors.Is(err, ErrPermission) {
			denied++
			continue
		}
		if err != nil {
			continue // gone, or a kernel thread
		}
		if buildID == nil {
			for _, m := range maps {
				if m.Offset != 0 {
					continue
				}
				if (id == "" && strings.Contains(m.Path, "/memfd:"+mappingPrefix)) ||
					strings.Contains(m.Path, "/memfd:"+mappingPrefix+id+" ") || strings.HasSuffix(m.Path, "/memfd:"+mappingPrefix+id) {
					if keptReverted(pid, m.Start) {
						continue
					}
					out = append(out, pid)
					break
				}
			}
			continue
		}
		for _, m := range maps {
			if m.Inode == 0 || m.Offset != 0 || !strings.HasPrefix(m.Path, "/") {
				continue
			}
			key := m.Dev + ":" + strconv.FormatUint(m.Inode, 10)
			id, ok := cache[key]
			if !ok {
				mf, err := readModule("/proc/" + e.Name() + "/map_files/" + strconv.FormatUint(m.Start, 16) + "-" + strconv.FormatUint(m.End, 16))
				if errors.Is(err, fs.ErrPermission) {
					deniedFiles++
					break // the other files of the process would not open either
				}
				if err == nil {
					id = mf.BuildID
				}
				cache[key] = id
			}
			if id != nil && bytes.Equal(id, buildID) {
				out = append(out, pid)
				break
			}
		}
	}
	sort.Ints(out)
	return out, nil
}

// BuildIDCache remembers the build-ids of mapped files by device and
// inode, so that scanning many processes reads each file once. The zero
// value is ready; it is safe for concurrent use.
type BuildIDCache struct {
	mu sync.Mutex
	m  map[string][]byte
}

// ProcessModules lists the ELF files that pid maps, with their build-ids,
// from /proc only (it attaches to nothing). Deleted is set for a file
// replaced or removed on disk since the process mapped it.
func ProcessModules(pid int, c *BuildIDCache) ([]Module, error) {
	maps, err := readMaps(pid)
	if err != nil {
		return nil, processError(pid, err)
	}
	var out []Module
	for _, m := range maps {
		if m.Inode == 0 || m.Offset != 0 || !strings.HasPrefix(m.Path, "/") {
			continue
		}
		key := m.Dev + ":" + strconv.FormatUint(m.Inode, 10)
		c.mu.Lock()
		id, ok := c.m[key]
		c.mu.Unlock()
		if !ok {
			path := "/proc/" + strconv.Itoa(pid) + "/map_files/" + strconv.FormatUint(m.Start, 16) + "-" + strconv.FormatUint(m.End, 16)
			mf, err := readModule(path)
			if errors.Is(err, fs.ErrPermission) {
				return nil, mapFilesError(pid, path)
			}
			var pathErr *fs.PathError
			if errors.As(err, &pathErr) {
				// The mapping could not be opened: it went away, or the
				// process is in the middle of an exec. That says nothing
				// of the file: remembering "no build-id" would hide the
				// module from every later look (an inventory once showed
				// a target as not mapped for good).
				continue
			}
			if err == nil {
				id = mf.BuildID
			}
			c.mu.Lock()
			if c.m == nil {
				c.m = map[string][]byte{}
			}
			c.m[key] = id
			c.mu.Unlock()
		}
		if id == nil {
			continue
		}
		out = append(out, Module{
			Path: strings.TrimSuffix(m.Path, " (deleted)"), BuildID: id,
			Deleted: strings.HasSuffix(m.Path, " (deleted)"), Start: m.Start, End: m.End,
		})
	}
	return out, nil
}

// privileges reports whether this process may read and attach to other
// users' processes (CAP_SYS_PTRACE) and open the files they map through
// /proc/PID/map_files (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN).
func privileges() (ptrace, mapFiles bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, false
			}
			const sysPtrace, sysAdmin, checkpointRestore = 19, 21, 40
			has := func(c uint) bool { return caps&(1<<c) != 0 }
			return has(sysPtrace), has(checkpointRestore) || has(sysAdmin)
		}
	}
	return false, false
}

// keptReverted reports whether the mapping at addr of pid is a patch
// mapping in state reverted (its code kept, see contexts_linux.go): not a
// patch the process carries. A header that cannot be read is not.
func keptReverted(pid int, addr uint64) bool {
	var hdr [stateOffset + 4]byte
	local := []unix.Iovec{{Base: &hdr[0], Len: uint64(len(hdr))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(hdr)}}
	if n, err := unix.ProcessVMReadv(pid, local, remote, 0); err != nil || n != len(hdr) {
		return false
	}
	return string(hdr[:len(headerMagic)]) == headerMagic && binary.LittleEndian.Uint32(hdr[stateOffset:]) == stateReverted
}
