package builder

import (
	"fmt"
	"sort"

	"github.com/hotpatch/hotpatch/patch"
)

// Unnamed writable data (a chunk of .data or .bss that no symbol names, such
// as the initialiser template gcc keeps for a local array of pointers under
// PIE) is identified by its section and its contents modulo relocations.
// An unchanged function that refers to it pairs it with the chunk the
// original function refers to at the same field; a changed function's
// reference is bound to that pair, or else to the one original chunk with
// the same contents, or else carried as new data. Two original candidates
// and no pairing is refused: a copy would lose the live state.

// notePair records that the fixed chunk at fs is the original chunk at os.
func (b *builder) notePair(os, fs uint64) {
	if b.anonPair == nil {
		b.anonPair = map[uint64]uint64{}
	}
	if prev, ok := b.anonPair[fs]; ok && prev != os {
		b.anonPair[fs] = 0 // conflicting evidence: decide by contents
		return
	}
	b.anonPair[fs] = os
}

// anonCandidates returns the starts of the original's unnamed chunks in the
// section called name that have the same contents as the fixed chunk r.
func (b *builder) anonCandidates(r ref) ([]uint64, error) {
	var out []uint64
	for _, sec := range b.orig.sections {
		if sec.name != r.sec.name {
			continue
		}
		i := sort.Search(len(b.orig.labels), func(i int) bool { return b.orig.labels[i] >= sec.addr })
		for ; i < len(b.orig.labels) && b.orig.labels[i] < sec.addr+sec.size; i++ {
			a := b.orig.labels[i]
			if b.orig.objectIn(a) != nil {
				continue
			}
			s, e := b.orig.plainExtent(a)
			if e-s != r.end-r.start {
				continue
			}
			same, err := b.sameChunk(s, e, r.start, r.end, "unnamed data")
			if err != nil {
				return nil, err
			}
			if same {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// anonTarget binds a reference to an unnamed writable chunk of the fixed
// build: to the original's chunk when it can be identified, else to a copy
// carried in the patch.
func (b *builder) anonTarget(r ref, from string) (patch.RelocTarget, error) {
	if os, ok := b.anonPair[r.start]; ok && os != 0 {
		b.noteBound(r, os)
		return patch.RelocTarget{Kind: patch.InModule, Addr: os + uint64(r.off)}, nil
	}
	cands, err := b.anonCandidates(r)
	if err != nil {
		return patch.RelocTarget{}, err
	}
	switch len(cands) {
	case 1:
		b.noteBound(r, cands[0])
		return patch.RelocTarget{Kind: patch.InModule, Addr: cands[0] + uint64(r.off)}, nil
	case 0:
		return b.carryAnon(r, from)
	}
	return patch.RelocTarget{}, &UnsupportedError{Function: from, Reason: fmt.Sprintf(
		"unnamed writable data at %s+%#x (%d bytes) matches %d places in the original, which cannot be told apart; give the object a name (a static variable)",
		r.sec.name, r.start-r.sec.addr, r.end-r.start, len(cands))}
}

// noteBound records which original chunk a fixed chunk was bound to (for
// the tests' round trip).
func (b *builder) noteBound(r ref, os uint64) {
	if b.anonBound == nil {
		b.anonBound = map[uint64][2]uint64{}
	}
	b.anonBound[r.start] = [2]uint64{os, r.end - r.start}
}

// carryAnon copies an unnamed writable chunk that the original lacks into
// the patch's Data or BSS, once.
func (b *builder) carryAnon(r ref, from string) (patch.RelocTarget, error) {
	if b.anonOff == nil {
		b.anonOff = map[uint64]anonCopy{}
	}
	c, ok := b.anonOff[r.start]
	if !ok {
		p := b.out
		size := r.end - r.start
		if data, isData := b.fixed.bytesAt(r.start, size); isData {
			c = anonCopy{sec: patch.Data, off: alignUp(uint64(len(p.Data)), 16)}
			p.Data = append(p.Data, make([]byte, c.off-uint64(len(p.Data)))...)
			p.Data = append(p.Data, data...)
		} else {
			c = anonCopy{sec: patch.BSS, off: alignUp(p.BSSSize, 16)}
			p.BSSSize = c.off + size
		}
		b.anonOff[r.start] = c
		p.Objects = append(p.Objects, patch.Object{Name: fmt.Sprintf("%s@%#x", r.sec.name, r.start), Section: c.sec, Offset: c.off, Size: size})
		if c.sec == patch.Data {
			if err := b.carryFields(patch.Data, c.off, r.start, r.end, from); err != nil {
				return patch.RelocTarget{}, err
			}
		}
	}
	return patch.RelocTarget{Kind: patch.InPatch, Section: c.sec, Offset: c.off + uint64(r.off)}, nil
}
