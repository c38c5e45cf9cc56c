//go:build linux && amd64

package engine

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/patch"
)

// appliedPatch is a patch mapping found in a process.
type appliedPatch struct {
	base, size uint64
	state      uint32
	rec        Record
}

// records reads the patch mappings of the process, oldest first.
func (t *target) records() ([]appliedPatch, error) {
	var out []appliedPatch
	seen := map[uint64]bool{}
	for _, m := range t.maps {
		if !strings.Contains(m.Path, "/memfd:"+mappingPrefix) || m.Offset != 0 || seen[m.Start] {
			continue
		}
		seen[m.Start] = true
		var hdr [recordOffset]byte
		if err := t.mem.ReadAt(hdr[:], m.Start); err != nil || string(hdr[:8]) != headerMagic {
			continue
		}
		n := binary.LittleEndian.Uint32(hdr[lengthOffset:])
		if n > 16<<20 {
			continue
		}
		// The record is rewritten JSON first, length second: after a kill
		// between the two, the length is stale but the JSON complete. So
		// read the whole header region and decode the first JSON value.
		region := uint64(n)
		for _, mm := range t.maps {
			if mm.Start == m.Start {
				region = max(region, mm.Size()-recordOffset)
			}
		}
		raw := make([]byte, min(region, 16<<20))
		if err := t.mem.ReadAt(raw, m.Start+recordOffset); err != nil {
			return nil, err
		}
		a := appliedPatch{base: m.Start, state: binary.LittleEndian.Uint32(hdr[stateOffset:])}
		if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&a.rec); err != nil {
			if !executableMapping(t.maps, m) {
				continue // a killed hotpatch's half-written mapping: the next session removes it
			}
			return nil, fmt.Errorf("process %d: unreadable patch record at %#x: %w", t.pid, m.Start, err)
		}
		a.size = a.rec.Size
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rec.AppliedAt < out[j].rec.AppliedAt })
	return out, nil
}

// executableMapping reports whether any part of the patch mapping that
// starts like m is executable (it was filled and made live).
func executableMapping(maps []Mapping, m Mapping) bool {
	for _, mm := range maps {
		if mm.Dev == m.Dev && mm.Inode == m.Inode && strings.Contains(mm.Perms, "x") {
			return true
		}
	}
	return false
}

func (t *target) setState(base uint64, state uint32) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], state)
	return t.mem.WriteAt(b[:], base+stateOffset)
}

// commit writes the redirects of a mapped patch once no thread is inside a
// function it replaces, waiting up to timeout for that.
func (t *target) commit(im *image, p *patch.Patch, timeout time.Duration) (*Result, error) {
	var ranges []codeRange
	for _, f := range im.record.Functions {
		if f.OldSize > 0 {
			ranges = append(ranges, codeRange{f.Name, f.OldAddr, f.OldAddr + f.OldSize})
		}
	}
	rec := &im.record
	// The record (with every redirect and the bytes it replaces) is in
	// place before any thread stops; the pause only flips the state word
	// and writes the jumps.
	rec.AppliedAt = time.Now().UnixNano()
	if err := t.rewriteRecord(im.base, rec, statePreparing); err != nil {
		return nil, err
	}
	if !t.cxxRuntime() {
		t.catch = &catcher{
			stub: im.base + im.roOff - returnStubSize,
			record: func(hj *Hijack) error {
				rec.Hijack = hj
				return t.rewriteRecord(im.base, rec, statePreparing)
			},
		}
		defer func() { t.catch = nil }()
	}
	err := t.whenQuiet(ranges, timeout, func(w *world) error {
		if err := t.setState(im.base, stateRedirecting); err != nil {
			return err
		}
		for _, rd := range rec.Redirects {
			cur := make([]byte, len(rd.Old))
			if err := t.mem.ReadAt(cur, rd.Site); err != nil {
				return err
			}
			if !bytes.Equal(cur, rd.Old) {
				return fmt.Errorf("process %d: the entry of %s changed while applying", t.pid, rd.Function)
			}
		}
		for i, rd := range rec.Redirects {
			if err := t.mem.WriteAt(rd.New, rd.Site); err != nil {
				// Put back what was written so far.
				for _, done := range rec.Redirects[:i] {
					t.mem.WriteAt(done.Old, done.Site)
				}
				return err
			}
		}
		return t.setState(im.base, stateApplied)
	})
	if err != nil {
		return nil, err
	}
	return &Result{PID: t.pid, Base: im.base, Paused: t.lastPause, Functions: len(rec.Redirects)}, nil
}

// rewriteRecord stores the record and the state in the mapping's header.
func (t *target) rewriteRecord(base uint64, rec *Record, state uint32) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	var hdr [recordOffset]byte
	copy(hdr[:], headerMagic)
	binary.LittleEndian.PutUint32(hdr[stateOffset:], state)
	binary.LittleEndian.PutUint32(hdr[lengthOffset:], uint32(len(raw)))
	if err := t.mem.WriteAt(raw, base+recordOffset); err != nil {
		return err
	}
	return t.mem.WriteAt(hdr[:], base)
}
