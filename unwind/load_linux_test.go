package unwind

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ownVDSO returns the image of this process's vdso, read from memory.
func ownVDSO(t testing.TB) []byte {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[5] != "[vdso]" {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		mem, err := os.Open("/proc/self/mem")
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		b := make([]byte, end-start)
		if _, err := mem.ReadAt(b, int64(start)); err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Skip("no vdso")
	return nil
}

// TestLoadVDSO loads the vdso from memory, with its section headers and
// without them (through PT_GNU_EH_FRAME), and finds an FDE for each of its
// functions.
func TestLoadVDSO(t *testing.T) {
	t.Parallel()
	img := ownVDSO(t)
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	var funcs []elf.Symbol
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
			funcs = append(funcs, s)
		}
	}
	if len(funcs) == 0 {
		t.Fatal("the vdso has no functions")
	}

	stripped := bytes.Clone(img)
	binary.LittleEndian.PutUint64(stripped[0x28:], 0) // e_shoff
	binary.LittleEndian.PutUint16(stripped[0x3c:], 0) // e_shnum
	binary.LittleEndian.PutUint16(stripped[0x3e:], 0) // e_shstrndx
	sf, err := elf.NewFile(bytes.NewReader(stripped))
	if err != nil {
		t.Fatal(err)
	}
	if len(sf.Sections) != 0 {
		t.Fatalf("stripped image still has %d sections", len(sf.Sections))
	}

	for name, ef := range map[string]*elf.File{"sections": f, "segments": sf} {
		tab, err := Load(ef)
		if err != nil {
			t.Fatalf("%s: Load: %v", name, err)
		}
		if tab.hdr == nil {
			t.Errorf("%s: the .eh_frame_hdr table is not used", name)
		}
		for _, s := range funcs {
			if _, ok, err := tab.find(s.Value); !ok || err != nil {
				t.Errorf("%s: %s at %#x: no FDE (%v)", name, s.Name, s.Value, err)
			}
		}
	}
}

// TestLoadCoversFunctions checks that every function of the test programs
// has an FDE, from .debug_frame when the program was built without unwind
// tables.
func TestLoadCoversFunctions(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			f, err := elf.Open(build(t, "chain", v.flags...))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tab, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			syms, err := f.Symbols()
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range syms {
				if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0 || s.Value == 0 {
					continue
				}
				fd, ok, err := tab.find(s.Value)
				if !ok || err != nil {
					t.Errorf("%s at %#x: no FDE (%v)", s.Name, s.Value, err)
					continue
				}
				want := ".eh_frame"
				if v.name == "debug_frame" && (s.Name == "a" || s.Name == "b" || s.Name == "c" || s.Name == "main") {
					want = ".debug_frame"
				}
				if fd.sec.name != want {
					t.Errorf("%s: FDE from %s, want %s", s.Name, fd.sec.name, want)
				}
			}
		})
	}
}

func TestLoadNotX86(t *testing.T) {
	t.Parallel()
	img := bytes.Clone(ownVDSO(t))
	binary.LittleEndian.PutUint16(img[18:], uint16(elf.EM_AARCH64))
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(f); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Load of an arm64 file: %v, want ErrNotSupported", err)
	}
}

func TestEmptyTable(t *testing.T) {
	t.Parallel()
	tab, err := newTable(sections{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := tab.find(0x1000); ok || err != nil {
		t.Errorf("find in an empty table: %v, %v", ok, err)
	}
	frames, err := Unwind(Regs{RIP: 0x1000}, []Module{{Start: 0, End: 0x2000, Table: tab}}, newFakeMem(0, 0), 0)
	var nc *NoCFIError
	if len(frames) != 1 || !errors.As(err, &nc) {
		t.Errorf("Unwind with an empty table: %v, %v", frames, err)
	}
}
