package engine

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/patch"
)

// onlyRecord opens pid and returns it with its one patch mapping.
func onlyRecord(t *testing.T, pid int) (*target, appliedPatch) {
	t.Helper()
	tg, err := openTarget(pid)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := tg.records()
	if err != nil || len(recs) != 1 {
		tg.close()
		t.Fatalf("records: %+v, %v; want one", recs, err)
	}
	return tg, recs[0]
}

// TestRecordFormat1: a patch record written the way hotpatch wrote it
// before the format word (format 1: the JSON at offset 16) is still read,
// rewritten in its own format while a revert catches the busy worker, and
// reverted. A record of a newer format is refused by name.
func TestRecordFormat1(t *testing.T) {
	proc, p, pub := busyTarget(t)
	pid := proc.Pid()
	if _, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	tg, a := onlyRecord(t, pid)
	if a.recOff != recordOffset {
		t.Fatalf("a new record starts at %d, want %d", a.recOff, recordOffset)
	}
	// Rewrite it as format 1 did: magic, state, length, JSON at 16.
	raw, err := json.Marshal(a.rec)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, recordOffsetV1)
	copy(hdr, headerMagic)
	binary.LittleEndian.PutUint32(hdr[stateOffset:], stateApplied)
	binary.LittleEndian.PutUint32(hdr[lengthOffset:], uint32(len(raw)))
	if err := tg.mem.Poke(append(hdr, raw...), a.base); err != nil {
		t.Fatal(err)
	}
	tg.close()
	if st, err := Status(pid); err != nil || len(st) != 1 || st[0].ID != p.ID || st[0].State != StateApplied {
		t.Fatalf("Status of a format-1 record = %+v, %v", st, err)
	}

	// A newer format than this engine knows: refused, untouched.
	tg, a = onlyRecord(t, pid)
	if a.recOff != recordOffsetV1 {
		t.Fatalf("the format-1 record is read at %d", a.recOff)
	}
	v3 := encodeHeader(stateApplied, len(raw))
	binary.LittleEndian.PutUint32(v3[formatOffset:], recordFormat+1)
	saved := make([]byte, recordOffset+len(raw)+8)
	if err := tg.mem.Peek(saved, a.base); err != nil {
		t.Fatal(err)
	}
	if err := tg.mem.Poke(append(v3, raw...), a.base); err != nil {
		t.Fatal(err)
	}
	var fe *RecordFormatError
	if _, err := Status(pid); !errors.As(err, &fe) || fe.Format != recordFormat+1 || !strings.Contains(err.Error(), "upgrade") {
		t.Errorf("Status of a format-%d record: %v; want a *RecordFormatError", recordFormat+1, err)
	}
	if _, err := Revert(pid, p.ID, time.Second); !errors.As(err, &fe) {
		t.Errorf("Revert of a format-%d record: %v; want a *RecordFormatError", recordFormat+1, err)
	}
	if err := tg.mem.Poke(saved, a.base); err != nil {
		t.Fatal(err)
	}
	tg.close()

	// The revert catches the worker leaving slow_step: the hijack goes
	// into the format-1 record and out again.
	if _, err := Revert(pid, p.ID, 5*time.Second); err != nil {
		t.Fatalf("Revert of a format-1 record: %v", err)
	}
	if got, err := proc.Probe("step"); err != nil || got != "step 101" {
		t.Errorf("after revert the process answered %q, %v", got, err)
	}
	if n := patchMappings(t, pid); n != 0 {
		t.Errorf("%d patch mappings left", n)
	}
}

// TestRecordTooBig: a record that would not fit before the patch's text
// is refused and nothing of the mapping changes.
func TestRecordTooBig(t *testing.T) {
	proc, p, pub := busyTarget(t)
	pid := proc.Pid()
	if _, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}, Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	tg, a := onlyRecord(t, pid)
	defer tg.close()
	before := make([]byte, a.rec.Text[0]+a.rec.Text[1])
	if err := tg.mem.Peek(before, a.base); err != nil {
		t.Fatal(err)
	}
	big := a.rec
	for uint64(len(big.Functions))*40 < a.rec.Text[0] {
		big.Functions = append(big.Functions, FuncInfo{Name: strings.Repeat("f", 40)})
	}
	if err := tg.rewriteRecord(a.base, a.recOff, &big, stateApplied); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("rewriteRecord of %d functions: %v; want a refusal", len(big.Functions), err)
	}
	after := make([]byte, len(before))
	if err := tg.mem.Peek(after, a.base); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("a refused record changed the mapping")
	}
}
