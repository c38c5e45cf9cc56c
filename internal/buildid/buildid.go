// Package buildid reads the GNU build-id of ELF files: the identity by
// which a patch names its target module. The builder reads it from the
// original build, the engine from each module a process maps, the tests
// from the fixtures they compile; all through this one parser.
package buildid

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrNone is returned for an ELF file without a GNU build-id note.
var ErrNone = errors.New("no GNU build-id note; link with -Wl,--build-id")

const ntGNUBuildID = 3

// FromNotes returns the NT_GNU_BUILD_ID descriptor in a block of ELF notes
// (little-endian), or nil. The padding of the last note may be missing.
func FromNotes(data []byte) []byte {
	for len(data) >= 12 {
		namesz := uint64(binary.LittleEndian.Uint32(data[0:]))
		descsz := uint64(binary.LittleEndian.Uint32(data[4:]))
		typ := binary.LittleEndian.Uint32(data[8:])
		nameEnd := 12 + (namesz+3)&^3
		if nameEnd+descsz > uint64(len(data)) {
			return nil
		}
		if typ == ntGNUBuildID && namesz == 4 && bytes.Equal(data[12:16], []byte("GNU\x00")) {
			return bytes.Clone(data[nameEnd : nameEnd+descsz])
		}
		data = data[min(nameEnd+(descsz+3)&^3, uint64(len(data))):]
	}
	return nil
}

// FromFile returns the build-id of an ELF file, looking in its PT_NOTE
// segments (what a loaded module has) and then its SHT_NOTE sections.
func FromFile(f *elf.File) ([]byte, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		if id := FromNotes(data); id != nil {
			return id, nil
		}
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		data, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", s.Name, err)
		}
		if id := FromNotes(data); id != nil {
			return id, nil
		}
	}
	return nil, ErrNone
}

// Read returns the build-id of the ELF file at path.
func Read(path string) ([]byte, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	id, err := FromFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return id, nil
}
