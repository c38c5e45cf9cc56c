package patch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// signedTestPayload returns testPatch with a signer and its canonical payload.
func signedTestPayload(t testing.TB) (*Patch, []byte) {
	t.Helper()
	_, pub := testKey("release")
	p := testPatch()
	p.Signer = pub
	payload, err := encodePayload(p)
	if err != nil {
		t.Fatalf("encodePayload: %v", err)
	}
	return p, payload
}

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	p, payload := signedTestPayload(t)
	if !bytes.HasPrefix(payload, []byte("HPATCH\x00\x02\x00")) {
		t.Errorf("payload starts %q, want magic and version 2", payload[:9])
	}
	got, err := decodePayload(payload)
	if err != nil {
		t.Fatalf("decodePayload: %v", err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("decode(encode(p)) differs (-want +got):\n%s", diff)
	}
}

func TestDecodePayloadEveryTruncation(t *testing.T) {
	t.Parallel()
	_, payload := signedTestPayload(t)
	for n := 0; n < len(payload); n++ {
		p, err := decodePayload(payload[:n])
		if err == nil || p != nil {
			t.Fatalf("decodePayload(first %d of %d bytes) succeeded", n, len(payload))
		}
		checkLoadError(t, err)
	}
}

// diffOffset returns the first offset where the payloads of a and b differ:
// the position of the field in which they differ.
func diffOffset(t *testing.T, a, b *Patch) int {
	t.Helper()
	_, pub := testKey("release")
	a.Signer, b.Signer = pub, pub
	ea, err := encodePayload(a)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := encodePayload(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range min(len(ea), len(eb)) {
		if ea[i] != eb[i] {
			return i
		}
	}
	t.Fatal("payloads do not differ")
	return 0
}

func TestDecodePayloadRejects(t *testing.T) {
	t.Parallel()
	_, payload := signedTestPayload(t)
	// at returns payload with one byte at off (found by diffOffset) set to v.
	at := func(off int, v byte) []byte {
		b := bytes.Clone(payload)
		b[off] = v
		return b
	}
	offsetOf := func(modify func(*Patch)) int {
		b := testPatch()
		modify(b)
		return diffOffset(t, testPatch(), b)
	}
	u32at := func(off int, v uint32) []byte {
		b := bytes.Clone(payload)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	functionsCount := offsetOf(func(p *Patch) { p.Functions = p.Functions[:1] })
	relocsCount := offsetOf(func(p *Patch) { p.Relocs = p.Relocs[:1] })
	idLen := offsetOf(func(p *Patch) { p.ID = "x" })
	descLen := offsetOf(func(p *Patch) { p.Description = "x" })

	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"bad magic", at(0, 'X'), "magic"},
		{"version 0", at(len(payloadMagic), 0), "format version 0"},
		{"unknown arch", at(offsetOf(func(p *Patch) { p.Target.Arch = ArchARM64 }), 9), "unknown arch code 9"},
		{"arch 0", at(offsetOf(func(p *Patch) { p.Target.Arch = ArchARM64 }), 0), "unknown arch code 0"},
		{"unknown severity", at(offsetOf(func(p *Patch) { p.Severity = SeverityLow }), 5), "unknown severity code 5"},
		{"unknown module type", at(offsetOf(func(p *Patch) { p.Target.Type = Executable }), 4), "unknown module type 4"},
		{"unknown function flags", at(offsetOf(func(p *Patch) { p.Functions[0].Flags = FuncNoRedirect }), 0x84), "unknown flags"},
		{"unknown object section", at(offsetOf(func(p *Patch) { p.Objects[0].Section = Data }), 5), "unknown section 5"},
		{"unknown reloc section", at(offsetOf(func(p *Patch) { p.Relocs[0].Section = Data }), 0), "unknown section 0"},
		{"unknown reloc type", at(offsetOf(func(p *Patch) { p.Relocs[0].Type = Abs64 }), 7), "unknown type 7"},
		{"unknown target kind", at(offsetOf(func(p *Patch) { p.Relocs[1].Target = RelocTarget{Kind: InPatch, Section: Text} }), 4), "unknown target kind 4"},
		{"indirect not bool", at(offsetOf(func(p *Patch) { p.Relocs[0].Target.Indirect = true }), 2), "want 0 or 1"},
		{"unknown target section", at(offsetOf(func(p *Patch) { p.Relocs[0].Target.Section = Data }), 9), "unknown section 9"},
		{"too many functions", u32at(functionsCount, maxFunctions+1), "more than the limit"},
		{"functions beyond the end", u32at(functionsCount, maxFunctions), "need at least"},
		{"relocs beyond the end", u32at(relocsCount, maxRelocs), "need at least"},
		{"huge relocs count", u32at(relocsCount, 0xffffffff), "more than the limit"},
		{"long id", u32at(idLen, maxID+1), "more than the limit of 128"},
		{"id beyond the end", payload[:idLen+4+3], "id needs 11 bytes, 3 left"},
		{"huge description", u32at(descLen, 0xffffffff), "more than the limit"},
		{"trailing byte", append(bytes.Clone(payload), 0), "1 trailing bytes"},
		{"oversized", append(bytes.Clone(payload), make([]byte, maxPayload)...), "more than the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := decodePayload(tt.data)
			if err == nil || p != nil {
				t.Fatal("decodePayload succeeded")
			}
			checkLoadError(t, err)
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %q does not wrap ErrFormat", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// A hostile count must be refused before anything is allocated for it.
func TestDecodePayloadHostileCountsAllocateLittle(t *testing.T) {
	_, payload := signedTestPayload(t)
	b := testPatch()
	b.Relocs = b.Relocs[:1]
	off := diffOffset(t, testPatch(), b)
	bad := bytes.Clone(payload)
	binary.LittleEndian.PutUint32(bad[off:], maxRelocs)
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := decodePayload(bad); err == nil {
			t.Fatal("decodePayload succeeded")
		}
	})
	// The patch up to the relocations: a few dozen small allocations.
	if allocs > 100 {
		t.Errorf("decodePayload of a payload claiming %d relocations made %v allocations", maxRelocs, allocs)
	}
}

func TestEncodePayloadRejects(t *testing.T) {
	t.Parallel()
	_, pub := testKey("release")
	tests := []struct {
		name   string
		modify func(*Patch)
		want   string
	}{
		{"unsigned", func(p *Patch) { p.Signer = nil }, "signer key is 0 bytes"},
		{"arch", func(p *Patch) { p.Target.Arch = "riscv64" }, `unknown target arch "riscv64"`},
		{"severity", func(p *Patch) { p.Severity = "urgent" }, `unknown severity "urgent"`},
		{"target kind", func(p *Patch) { p.Relocs[2].Target.Kind = 0 }, "relocation 2: unknown target kind 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testPatch()
			p.Signer = pub
			tt.modify(p)
			_, err := encodePayload(p)
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("encodePayload = %v, want ErrFormat mentioning %q", err, tt.want)
			}
		})
	}
}
