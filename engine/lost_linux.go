//go:build linux && amd64

package engine

import (
	"bytes"
	"encoding/hex"
)

// Lost patches.
//
// A patch mapping outlives the code it redirects: a library unloaded with
// dlclose takes the redirects with it, and loaded again (at the same
// address or another) it comes back with its original code, while the
// mapping named hotpatch:ID and its record stay. The record alone would
// then say "applied" while the fix is not in effect. So every reader of the
// records (Status, Apply, Revert) checks each redirect in the code itself.

// lost reports whether a patch in state applied has a redirect that is no
// longer in the code: its site is not in a module with the record's
// build-id at the record's bias, or holds neither the patch's jump nor the
// jump of a newer patch stacked on the same entry.
func (t *target) lost(a appliedPatch, all []appliedPatch) bool {
	if a.state != stateApplied {
		return false
	}
	for _, rd := range a.rec.Redirects {
		if !t.ownsSite(a.rec, rd.Site, len(rd.New)) {
			return true
		}
		if t.holds(rd.Site, rd.New) {
			continue
		}
		if t.newerAt(a, rd.Site, all) == nil {
			return true
		}
	}
	return false
}

// newerAt returns the newest patch applied after a whose redirect at site
// is in the code, or nil.
func (t *target) newerAt(a appliedPatch, site uint64, all []appliedPatch) *appliedPatch {
	var found *appliedPatch
	for i, b := range all {
		if b.rec.AppliedAt <= a.rec.AppliedAt || b.state != stateApplied {
			continue
		}
		for _, brd := range b.rec.Redirects {
			if brd.Site == site && t.holds(site, brd.New) {
				found = &all[i]
			}
		}
	}
	return found
}

// rewire is a redirect of a newer patch stacked directly on one being
// reverted, and what it must put back once that one is gone.
type rewire struct {
	b   *appliedPatch
	j   int    // index in b.rec.Redirects
	old []byte // the bytes the reverted patch's redirect replaced
}

// stackedOn returns the applied patch whose redirect (index j) sits
// directly on a's redirect rd: written over a's jump, of the same size.
func (t *target) stackedOn(a appliedPatch, rd Redirect, all []appliedPatch) (*appliedPatch, int) {
	for i, b := range all {
		if b.rec.AppliedAt <= a.rec.AppliedAt || b.state != stateApplied {
			continue
		}
		for j, brd := range b.rec.Redirects {
			if brd.Site == rd.Site && bytes.Equal(brd.Old, rd.New) {
				return &all[i], j
			}
		}
	}
	return nil, 0
}

// ownsSite reports whether [site, site+n) lies in the module the record
// patched: a mapped module with its build-id, at its bias.
func (t *target) ownsSite(rec Record, site uint64, n int) bool {
	for _, m := range t.mods {
		if site >= m.Start && site+uint64(n) <= m.End {
			return hex.EncodeToString(m.BuildID) == rec.BuildID && m.Bias == rec.Bias
		}
	}
	return false
}

// holds reports whether the process has want at addr.
func (t *target) holds(addr uint64, want []byte) bool {
	cur := make([]byte, len(want))
	return t.mem.Peek(cur, addr) == nil && bytes.Equal(cur, want)
}

// live returns the patches of all that are not lost.
func (t *target) live(all []appliedPatch) []appliedPatch {
	var out []appliedPatch
	for _, a := range all {
		if !t.lost(a, all) {
			out = append(out, a)
		}
	}
	return out
}
