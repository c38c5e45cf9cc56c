package buildid

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func note(name string, typ uint32, desc []byte, pad bool) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, uint32(len(name)+1))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(desc)))
	b = binary.LittleEndian.AppendUint32(b, typ)
	b = append(b, name...)
	b = append(b, 0)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for pad && len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestFromNotes(t *testing.T) {
	id := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}
	abi := note("GNU", 1, []byte{0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0}, true)
	tests := []struct {
		name string
		data []byte
		want []byte
	}{
		{"after another note", append(abi, note("GNU", ntGNUBuildID, id, true)...), id},
		{"last padding cut off", append(abi, note("GNU", ntGNUBuildID, id, false)...), id},
		{"other owner", note("XYZ", ntGNUBuildID, id, true), nil},
		{"truncated", note("GNU", ntGNUBuildID, id, true)[:18], nil},
		{"empty", nil, nil},
		{"huge sizes", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0}, nil},
	}
	for _, tt := range tests {
		if got := FromNotes(tt.data); !bytes.Equal(got, tt.want) {
			t.Errorf("%s: got %x, want %x", tt.name, got, tt.want)
		}
	}
}

// TestRead reads the build-ids gcc writes: the default (SHA-1), a chosen
// odd-length one, and none.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "m.c")
	if err := writeFile(src, "int main(void) { return 0; }\n"); err != nil {
		t.Fatal(err)
	}
	gcc := func(out string, flags ...string) string {
		p := filepath.Join(dir, out)
		if b, err := exec.Command("gcc", append(flags, "-o", p, src)...).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v: %s", err, b)
		}
		return p
	}
	if id, err := Read(gcc("sha1", "-Wl,--build-id=sha1")); err != nil || len(id) != 20 {
		t.Errorf("sha1 build-id: %x, %v", id, err)
	}
	if id, err := Read(gcc("odd", "-Wl,--build-id=0x0102030405")); err != nil || !bytes.Equal(id, []byte{1, 2, 3, 4, 5}) {
		t.Errorf("odd-length build-id: %x, %v", id, err)
	}
	if _, err := Read(gcc("none", "-Wl,--build-id=none")); err == nil {
		t.Errorf("no build-id: no error")
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
