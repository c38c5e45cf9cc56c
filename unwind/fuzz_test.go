package unwind

import (
	"debug/elf"
	"errors"
	"os/exec"
	"testing"
)

// FuzzLoad feeds arbitrary .eh_frame, .eh_frame_hdr and .debug_frame bytes
// to the parser. Whatever it accepts must then be usable: every lookup and
// every unwind ends with a result or a documented error, never a panic.
// Seeds: testdata/fuzz/FuzzLoad, and the sections of freshly built test
// programs when gcc is installed.
func FuzzLoad(f *testing.F) {
	syn := syntheticEh()
	f.Add(syn.addr, syn.b, uint64(0), []byte(nil), []byte(nil))
	if _, err := exec.LookPath("gcc"); err == nil {
		for _, v := range variants {
			path := build(f, "chain", v.flags...)
			ef, err := elf.Open(path)
			if err != nil {
				f.Fatal(err)
			}
			sec := func(name string) ([]byte, uint64) {
				s := ef.Section(name)
				if s == nil {
					return nil, 0
				}
				b, err := s.Data()
				if err != nil {
					f.Fatal(err)
				}
				return b, s.Addr
			}
			eh, ehAddr := sec(".eh_frame")
			hdr, hdrAddr := sec(".eh_frame_hdr")
			debug, _ := sec(".debug_frame")
			f.Add(ehAddr, eh, hdrAddr, hdr, debug)
			ef.Close()
		}
	}
	f.Fuzz(func(t *testing.T, ehAddr uint64, eh []byte, hdrAddr uint64, hdr []byte, debug []byte) {
		in := sections{ehAddr: ehAddr, hdrAddr: hdrAddr}
		if len(eh) > 0 {
			in.eh = eh
		}
		if len(hdr) > 0 {
			in.hdr = hdr
		}
		if len(debug) > 0 {
			in.debug = debug
		}
		tab, err := newTable(in)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("newTable: %v is not a *FormatError", err)
			}
			return
		}
		exercise(t, tab, eh)
	})
}

// exercise looks up and unwinds from the ends of the table's FDEs.
func exercise(t *testing.T, tab *Table, memBytes []byte) {
	var pcs []uint64
	add := func(begin, end uint64) {
		if len(pcs) < 64 {
			pcs = append(pcs, begin, end-1, begin+(end-begin)/2)
		}
	}
	for _, r := range tab.ehIndex {
		add(r.begin, r.end)
	}
	for _, r := range tab.dbgIndex {
		add(r.begin, r.end)
	}
	if h := tab.hdr; h != nil {
		for i := 0; i < h.count && i < 16; i++ {
			loc, _ := h.entry(i)
			pcs = append(pcs, loc)
		}
	}
	mods := []Module{{Start: 0, End: ^uint64(0), Table: tab}}
	mem := patternMem(memBytes)
	for _, pc := range pcs {
		f, ok, err := tab.find(pc)
		if err != nil {
			t.Fatalf("find(%#x) after a successful load: %v", pc, err)
		}
		if ok && (pc < f.begin || pc >= f.end) {
			t.Fatalf("find(%#x) = FDE [%#x,%#x)", pc, f.begin, f.end)
		}
		regs := Regs{RIP: pc, RSP: 0x7fff0000, RBP: 0x7fff0100, RAX: 0x7fff0200}
		frames, err := Unwind(regs, mods, mem, 8)
		if len(frames) > 8 {
			t.Fatalf("Unwind returned %d frames, more than the limit", len(frames))
		}
		var nc *NoCFIError
		var fe *FrameError
		if err != nil && !errors.Is(err, ErrTruncated) && !errors.As(err, &nc) && !errors.As(err, &fe) {
			t.Fatalf("Unwind: undocumented error %T %v", err, err)
		}
		if fe != nil {
			var fmtErr *FormatError
			if errors.As(fe, &fmtErr) {
				t.Fatalf("Unwind found malformed CFI after a successful load: %v", fe)
			}
		}
	}
}

// patternMem is memory filled with a repeating pattern, unreadable above
// 2^47 (as user space ends there).
type patternMem []byte

func (m patternMem) ReadAt(p []byte, addr uint64) error {
	if len(m) == 0 || addr >= 1<<47 {
		return errUnmapped
	}
	for i := range p {
		p[i] = m[(addr+uint64(i))%uint64(len(m))]
	}
	return nil
}
