package engine

import (
	"bytes"
	"debug/elf"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestSlackFileBytes: in a program linked with -z noseparate-code, the
// bytes of the file after the code segment (the start of the data
// segment) share the code's last page, so the slack is not zeros. The
// engine must take the file's bytes as they are, and every session must
// leave the slack holding them.
func TestSlackFileBytes(t *testing.T) {
	bin, err := fixture.Compile("engine-stopme-nsc", []string{"testdata/stopme.c"}, "-O2", "-pthread", "-Wl,-z,noseparate-code")
	if err != nil {
		t.Fatal(err)
	}
	// What the file holds after its code segment, up to the page end.
	ef, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	var vend uint64
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
			vend = p.Vaddr + p.Memsz
			want = make([]byte, alignUp(vend, pageSize)-vend)
			raw, err := os.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			copy(want, raw[p.Off+p.Filesz:])
		}
	}
	ef.Close()
	if len(want) == 0 || bytes.Count(want, []byte{0}) == len(want) {
		t.Fatalf("the test program's slack holds only zeros in the file; the test needs other bytes")
	}

	p := fixture.Start(t, bin, "STOPME_THREADS=1")
	if got, err := p.Probe("ping"); err != nil || got != "pong 1" {
		t.Fatalf("first ping: %q, %v", got, err)
	}
	tg, err := openTarget(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	var exe *Module
	for i := range tg.mods {
		if tg.mods[i].Path == bin {
			exe = &tg.mods[i]
		}
	}
	if exe == nil {
		t.Fatalf("%s is not among the modules", bin)
	}
	addr := exe.Bias + vend
	found := false
	for _, a := range tg.slackAreas() {
		if a.addr == addr {
			found = true
			if !bytes.Equal(a.file, want) {
				t.Errorf("the engine takes the slack's file bytes as %x…, the file has %x…", a.file[:16], want[:16])
			}
		}
	}
	if !found {
		t.Fatalf("no slack area at %#x", addr)
	}
	if err := tg.withSyscalls(func(s *session) error {
		_, err := s.syscall(unix.SYS_GETPID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := tg.mem.Peek(got, addr); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("after a session the slack holds %x…, the file %x…", got[:16], want[:16])
	}
	if got := probeNumber(t, p, "ping"); got != 2 {
		t.Errorf("ping count %d, want 2", got)
	}
}
