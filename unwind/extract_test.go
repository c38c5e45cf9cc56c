package unwind

import (
	"debug/elf"
	"testing"
)

// TestExtract moves every function of a gcc-built program (on paper) and
// checks that the section Extract makes, relocated and loaded again, gives
// each instruction of the moved code the same rules as the original.
func TestExtract(t *testing.T) {
	t.Parallel()
	for _, v := range variants[:3] {
		t.Run(v.name, func(t *testing.T) {
			f, err := elf.Open(build(t, "recurse", v.flags...))
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
			var moves []Move
			to := uint64(0)
			for _, s := range syms {
				if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Size > 0 && s.Value != 0 {
					moves = append(moves, Move{From: s.Value, Size: s.Size, To: to})
					to += (s.Size + 15) &^ 15
				}
			}
			data, covered, err := tab.Extract(moves)
			if err != nil {
				t.Fatal(err)
			}
			const base, at = 0x7f0000000000, 0x7f0000100000
			if err := RelocateEhFrame(data, base); err != nil {
				t.Fatal(err)
			}
			moved, err := LoadEhFrame(data, at)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for i, m := range moves {
				if !covered[i] {
					continue
				}
				n++
				for k := uint64(0); k < m.Size; k++ {
					want, err1 := rowAt(tab, m.From+k)
					got, err2 := rowAt(moved, base+m.To+k)
					if err1 != nil || err2 != nil || got != want {
						t.Fatalf("function at %#x, +%d: moved rules %q (%v), original %q (%v)", m.From, k, got, err2, want, err1)
					}
				}
			}
			if n == 0 || n*2 < len(moves) {
				t.Errorf("only %d of %d functions had an FDE to carry", n, len(moves))
			}
			if _, ok, _ := moved.find(base + to + 64); ok {
				t.Errorf("moved table describes code past the moved functions")
			}
		})
	}
}
