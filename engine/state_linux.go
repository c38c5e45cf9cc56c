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
	// recOff is where the JSON record starts: it tells the format the
	// mapping was written in (see recordFormat), which rewrites keep.
	recOff uint64
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
		if err := t.mem.Peek(hdr[:], m.Start); err != nil || string(hdr[:8]) != headerMagic {
			continue
		}
		n := binary.LittleEndian.Uint32(hdr[lengthOffset:])
		if n > 16<<20 {
			continue
		}
		off := uint64(recordOffset)
		if hdr[recordOffsetV1] == '{' {
			off = recordOffsetV1 // format 1: no format word
		} else if f := binary.LittleEndian.Uint32(hdr[formatOffset:]); f != recordFormat {
			if !executableMapping(t.maps, m) {
				continue // half written: the next session removes it
			}
			return nil, &RecordFormatError{PID: t.pid, Base: m.Start, Format: f}
		}
		// The record is rewritten JSON first, length second: after a kill
		// between the two, the length is stale but the JSON complete. So
		// read the whole header region and decode the first JSON value.
		region := uint64(n)
		for _, mm := range t.maps {
			if mm.Start == m.Start {
				region = max(region, mm.Size()-off)
			}
		}
		raw := make([]byte, min(region, 16<<20))
		if err := t.mem.Peek(raw, m.Start+off); err != nil {
			return nil, err
		}
		a := appliedPatch{base: m.Start, state: binary.LittleEndian.Uint32(hdr[stateOffset:]), recOff: off}
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
	return t.mem.Poke(b[:], base+stateOffset)
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
	if err := t.rewriteRecord(im.base, recordOffset, rec, statePreparing); err != nil {
		return nil, err
	}
	if !t.cxxRuntime() {
		t.catch = &catcher{
			id: im.record.ID, state: StatePreparing,
			stub: im.base + im.roOff - returnStubSize,
			record: func(hj *Hijack) error {
				rec.Hijack = hj
				return t.rewriteRecord(im.base, recordOffset, rec, statePreparing)
			},
		}
		defer func() { t.catch = nil }()
	}
	err := t.whenQuiet(ranges, timeout, func(w *world) error {
		// Check every entry before the first write.
		for _, rd := range rec.Redirects {
			cur := make([]byte, len(rd.Old))
			if err := t.mem.Peek(cur, rd.Site); err != nil {
				return err
			}
			if !bytes.Equal(cur, rd.Old) {
				return fmt.Errorf("process %d: the entry of %s changed while applying", t.pid, rd.Function)
			}
		}
		// A failed write of the state word writes nothing: still preparing.
		if err := t.setState(im.base, stateRedirecting); err != nil {
			return err
		}
		for i, rd := range rec.Redirects {
			err := faultAt("redirect")
			if err == nil {
				err = t.mem.Poke(rd.New, rd.Site)
			}
			if err != nil {
				return t.rollback(im, rec.Redirects[:i], fmt.Errorf("process %d: writing the redirect of %s: %w", t.pid, rd.Function, err))
			}
		}
		if err := t.setState(im.base, stateApplied); err != nil {
			return t.rollback(im, rec.Redirects, fmt.Errorf("process %d: marking the patch applied: %w", t.pid, err))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Result{PID: t.pid, Base: im.base, Paused: t.lastPause, Functions: len(rec.Redirects)}, nil
}

// rollback puts back the entries of the redirects written so far, newest
// first, after cause made an apply fail while every thread is stopped. If
// every entry and the state word (back to preparing) are written, nothing
// refers to the patch any more and cause is returned: the caller unmaps
// it. Otherwise the patch stays in state redirecting, its record listing
// every redirect and the bytes it replaced, and a *HalfDoneError says so:
// the next apply or revert reverts it.
func (t *target) rollback(im *image, written []Redirect, cause error) error {
	for i := len(written) - 1; i >= 0; i-- {
		rd := written[i]
		err := faultAt("rollback")
		if err == nil {
			err = t.mem.Poke(rd.Old, rd.Site)
		}
		if err != nil {
			return &HalfDoneError{PID: t.pid, ID: im.record.ID, State: StateRedirecting,
				Err: fmt.Errorf("%w; putting back the entry of %s failed too: %v", cause, rd.Function, err)}
		}
	}
	if err := t.setState(im.base, statePreparing); err != nil {
		return &HalfDoneError{PID: t.pid, ID: im.record.ID, State: StateRedirecting,
			Err: fmt.Errorf("%w; setting the patch back to preparing failed too: %v", cause, err)}
	}
	return cause
}

// faultHook, when set (by tests only), is called at the named points of
// the engine's error paths and makes the step there fail with its error.
var faultHook func(point string) error

func faultAt(point string) error {
	if faultHook == nil {
		return nil
	}
	return faultHook(point)
}

// rewriteRecord stores the record and the state in the header of the
// mapping at base, whose record starts at recOff: a mapping keeps the
// format it was written in (see recordFormat). A record that would not fit
// before the patch's text is refused, and nothing is written.
func (t *target) rewriteRecord(base, recOff uint64, rec *Record, state uint32) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if area := recordArea(rec, recOff); uint64(len(raw)) > area {
		return fmt.Errorf("process %d: the record of patch %s (%d bytes) does not fit in the %d bytes of its header", t.pid, rec.ID, len(raw), area)
	}
	hdr := encodeHeader(state, len(raw))
	if recOff == recordOffsetV1 {
		hdr = hdr[:recordOffsetV1] // format 1: no format word
	}
	if err := t.mem.Poke(raw, base+recOff); err != nil {
		return err
	}
	return t.mem.Poke(hdr, base)
}
