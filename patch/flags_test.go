package patch

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPayloadVersion3 checks the compatibility rule of the patch flags: a
// patch without flags is written as version 2, exactly as before, and one
// with flags (or an exported new function) as version 3, which round-trips
// and which a version-2 spelling cannot fake.
func TestPayloadVersion3(t *testing.T) {
	t.Parallel()
	_, pub := testKey("release")
	v2 := testPatch()
	v2.Signer = pub
	plain, err := encodePayload(v2)
	if err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint16(plain[len(payloadMagic):]); v != 2 {
		t.Fatalf("a patch without flags is written as version %d, want 2", v)
	}

	for _, tt := range []struct {
		name   string
		modify func(*Patch)
	}{
		{"startup-only", func(p *Patch) { p.Flags = FlagStartupOnly }},
		{"layout checked", func(p *Patch) { p.Flags = FlagLayoutChecked }},
		{"exported function", func(p *Patch) { p.Functions[3].Flags |= FuncExported }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := testPatch()
			p.Signer = pub
			tt.modify(p)
			payload, err := encodePayload(p)
			if err != nil {
				t.Fatal(err)
			}
			if v := binary.LittleEndian.Uint16(payload[len(payloadMagic):]); v != 3 {
				t.Fatalf("written as version %d, want 3", v)
			}
			got, err := decodePayload(payload)
			if err != nil {
				t.Fatalf("decodePayload: %v", err)
			}
			if diff := cmp.Diff(p, got); diff != "" {
				t.Errorf("decode(encode(p)) differs (-want +got):\n%s", diff)
			}
			// The same bytes labelled version 2 lose the flags: refused.
			old := bytes.Clone(payload)
			binary.LittleEndian.PutUint16(old[len(payloadMagic):], 2)
			if _, err := decodePayload(old); err == nil {
				t.Errorf("a version-2 label on a version-3 payload was accepted")
			}
		})
	}

	// A version-3 payload whose flags are zero is not canonical: version 2
	// spells that patch.
	zero := append(bytes.Clone(plain), 0, 0, 0, 0)
	binary.LittleEndian.PutUint16(zero[len(payloadMagic):], 3)
	if _, err := decodePayload(zero); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Errorf("version 3 with zero flags: %v, want a canonical-form error", err)
	}
	// Unknown flag bits are refused.
	unknown := append(bytes.Clone(plain), 0, 0, 0, 0x80)
	binary.LittleEndian.PutUint16(unknown[len(payloadMagic):], 3)
	if _, err := decodePayload(unknown); err == nil || !strings.Contains(err.Error(), "unknown patch flags") {
		t.Errorf("unknown flags: %v, want an error naming them", err)
	}
	// FuncExported is refused on a function that is not new.
	p := testPatch()
	p.Functions[0].Flags |= FuncExported
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "exported but is not new") {
		t.Errorf("Validate of an exported replaced function: %v", err)
	}
}
