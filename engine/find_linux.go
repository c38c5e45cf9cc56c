//go:build linux && amd64

package engine

import (
	"bytes"
	"os"
	"sort"
	"strconv"
	"strings"
)

// FindProcesses returns the pids of every process on the host that maps a
// module with the given build-id (the --all of the CLI); when buildID is
// nil, those that carry the patch named id, or any patch when id is "".
// It reads /proc only; it does not attach to anything.
func FindProcesses(buildID []byte, id string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	cache := map[string][]byte{} // dev:inode -> build-id
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		maps, err := readMaps(pid)
		if err != nil {
			continue // gone, or a kernel thread
		}
		if buildID == nil {
			for _, m := range maps {
				if (id == "" && strings.Contains(m.Path, "/memfd:"+mappingPrefix)) ||
					strings.Contains(m.Path, "/memfd:"+mappingPrefix+id+" ") || strings.HasSuffix(m.Path, "/memfd:"+mappingPrefix+id) {
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
				if mf, err := readModule("/proc/" + e.Name() + "/map_files/" + strconv.FormatUint(m.Start, 16) + "-" + strconv.FormatUint(m.End, 16)); err == nil {
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
