package builder

import (
	"bytes"
	"debug/elf"
)

// A jump table at the end of its chunk.
//
// An unnamed read-only chunk runs from where code refers to it to the next
// label (module.extent), so it takes in the alignment padding after it. A
// gcc jump table that moved between the builds (a table before it grew)
// keeps its entries but not its padding: the chunks differ in size though
// the tables are the same. tableLen finds the table in such a chunk, so
// that the two tables are compared by their entries alone.

// tableLen returns the length of the jump table that fills the chunk
// [start, end) but for zero padding: relocated fields one after the other
// from start, all PC-relative 4-byte entries (PIC: ".long .Lcase -
// .Ltable") or all absolute 8-byte ones (".quad .Lcase"), then fewer than
// 16 zero bytes without relocations. ok is false for anything else.
func (m *module) tableLen(start, end uint64) (n uint64, ok bool) {
	rs := m.relocsIn(start, end-start)
	if len(rs) == 0 {
		return 0, false
	}
	var size uint64
	switch rs[0].typ {
	case elf.R_X86_64_PC32:
		size = 4
	case elf.R_X86_64_64:
		size = 8
	default:
		return 0, false
	}
	for i, r := range rs {
		if r.typ != rs[0].typ || r.off != start+size*uint64(i) {
			return 0, false
		}
	}
	n = size * uint64(len(rs))
	if n > end-start || end-start-n >= 16 {
		return 0, false
	}
	pad, okb := m.bytesAt(start+n, end-start-n)
	if !okb || bytes.Count(pad, []byte{0}) != len(pad) {
		return 0, false
	}
	return n, true
}

// sameTables reports whether two unnamed chunks of different sizes are
// jump tables with the same entries, their padding aside.
func (b *builder) sameTables(ro, rf ref) (bool, error) {
	no, okO := b.orig.tableLen(ro.start, ro.end)
	nf, okF := b.fixed.tableLen(rf.start, rf.end)
	if !okO || !okF || no != nf || ro.off != rf.off || ro.off < 0 || uint64(ro.off) >= no {
		return false, nil
	}
	return b.sameChunk(ro.start, ro.start+no, rf.start, rf.start+nf, "jump table")
}
