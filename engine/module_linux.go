//go:build linux && amd64

package engine

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/hotpatch/hotpatch/internal/buildid"
)

// modules lists the ELF files mapped by pid, with their build-ids.
func modules(pid int, maps []Mapping) ([]Module, error) {
	var out []Module
	seen := map[string]int{}
	for _, m := range maps {
		if m.Inode == 0 || m.Path == "" || !strings.HasPrefix(m.Path, "/") {
			continue
		}
		key := m.Dev + ":" + fmt.Sprint(m.Inode)
		if i, ok := seen[key]; ok {
			if m.End > out[i].End {
				out[i].End = m.End
			}
			if m.Start < out[i].Start {
				out[i].Start = m.Start
			}
			continue
		}
		if m.Offset != 0 {
			continue // the first mapping of a file maps offset 0
		}
		// Read the file the process really mapped, even if it was
		// replaced on disk since.
		path := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End)
		mod, err := readModule(path)
		if errors.Is(err, fs.ErrPermission) {
			// Not "no such module": the engine may not look.
			return nil, mapFilesError(pid, path)
		}
		if err != nil {
			continue // not an ELF file (a mapped data file), or gone
		}
		mod.Path = strings.TrimSuffix(m.Path, " (deleted)")
		mod.Deleted = strings.HasSuffix(m.Path, " (deleted)")
		mod.Start, mod.End = m.Start, m.End
		mod.Bias = m.Start - mod.firstVaddr // 0 for a fixed-address executable
		seen[key] = len(out)
		out = append(out, mod.Module)
	}
	return out, nil
}

type moduleFile struct {
	Module
	firstVaddr uint64 // page-aligned p_vaddr of the PT_LOAD at file offset 0
}

func readModule(path string) (*moduleFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, err
	}
	mf := &moduleFile{}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Off == 0 {
			mf.firstVaddr = p.Vaddr &^ (p.Align - 1)
			break
		}
	}
	mf.BuildID, _ = buildid.FromFile(ef) // nil: a module without one matches no patch
	return mf, nil
}
