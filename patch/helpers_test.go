package patch

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// testKey returns a deterministic key pair named by seed, so signed test
// files (and the fuzz corpus) are the same on every run.
func testKey(seed string) (PrivateKey, PublicKey) {
	s := sha256.Sum256([]byte("hotpatch test key " + seed))
	k := ed25519.NewKeyFromSeed(s[:])
	return PrivateKey(k), PublicKey(k.Public().(ed25519.PublicKey))
}

func sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func filled(n int, b byte) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b + byte(i)
	}
	return out
}

// testPatch returns a fresh, realistic, valid, unsigned patch: replaced,
// cold-part, dropped cold-part and new functions, objects in every data
// section, and relocations of every type and target kind.
func testPatch() *Patch {
	return &Patch{
		ID:          "ledger-memo",
		Version:     3,
		CVEs:        []string{"CVE-2026-0001", "CVE-2026-12345"},
		Severity:    SeverityHigh,
		Description: "memo bounds check\nrejects memos longer than 64 bytes",
		Target: Target{
			Name:    "ledger",
			BuildID: filled(20, 0xa0),
			Arch:    ArchX86_64,
			Type:    PIE,
		},
		Functions: []Function{
			{Name: "parse_header", OldAddr: 0x1230, OldSize: 0x90, OldSHA256: sum("parse_header"), NewOffset: 0, NewSize: 0xa0},
			{Name: "parse_header.cold", Flags: FuncNoRedirect, OldAddr: 0x1100, OldSize: 0x20, OldSHA256: sum("parse_header.cold"), NewOffset: 0xa0, NewSize: 0x18},
			{Name: "format_line.cold", File: "ledger.c", Flags: FuncNoRedirect, OldAddr: 0x1400, OldSize: 0x10, OldSHA256: sum("format_line.cold")},
			{Name: "check_memo", File: "ledger.c", Flags: FuncNew, NewOffset: 0xc0, NewSize: 0x40},
		},
		Objects: []Object{
			{Name: ".LC3", Section: ROData, Offset: 0, Size: 0x10},
			{Name: "memo_jump_table", Section: ROData, Offset: 0x10, Size: 0x20},
			{Name: "memo_limits", Section: Data, Offset: 0, Size: 0x10},
			{Name: "memo_scratch", Section: BSS, Offset: 0, Size: 0x20},
		},
		Relocs: []Reloc{
			{Section: Text, Offset: 0x10, Type: PC32, Addend: -4, Target: RelocTarget{Kind: InPatch, Section: ROData, Offset: 0}},
			{Section: Text, Offset: 0x20, Type: PC32, Addend: -4, Target: RelocTarget{Kind: InModule, Addr: 0x4010}},
			{Section: Text, Offset: 0x30, Type: PC32, Addend: -4, Target: RelocTarget{Kind: External, Symbol: "snprintf", Version: "GLIBC_2.2.5"}},
			{Section: Text, Offset: 0x40, Type: PC32, Addend: -4, Target: RelocTarget{Kind: External, Symbol: "pthread_mutex_lock", Indirect: true}},
			{Section: Text, Offset: 0x50, Type: PC32, Addend: -4, Target: RelocTarget{Kind: External, Symbol: "snprintf", Version: "GLIBC_2.2.5"}},
			{Section: Text, Offset: 0xc8, Type: PC32, Addend: -4, Target: RelocTarget{Kind: InPatch, Section: Text, Offset: 0xa0}},
			{Section: Text, Offset: 0xd0, Type: Abs32S, Target: RelocTarget{Kind: InPatch, Section: BSS, Offset: 0}},
			{Section: Text, Offset: 0xd8, Type: PC32, Addend: -4, Target: RelocTarget{Kind: InModule, Addr: 0x3ff8, Indirect: true}},
			{Section: ROData, Offset: 0x10, Type: Abs64, Target: RelocTarget{Kind: InPatch, Section: Text, Offset: 0xc0}},
			{Section: ROData, Offset: 0x18, Type: Abs64, Addend: 0x10, Target: RelocTarget{Kind: InModule, Addr: 0x1300}},
			{Section: Data, Offset: 0, Type: Abs64, Target: RelocTarget{Kind: InPatch, Section: ROData, Offset: 0x10}},
			{Section: Data, Offset: 8, Type: Abs32, Target: RelocTarget{Kind: InModule, Addr: 0x5000}},
		},
		Text:    filled(0x100, 0x90),
		ROData:  filled(0x30, 0x20),
		Data:    filled(0x10, 0x01),
		BSSSize: 0x20,
		Unwind:  filled(0x1, 0x07),
	}
}

// signedTestFile returns testPatch signed by testKey("release").
func signedTestFile(t testing.TB) (*Patch, []byte) {
	t.Helper()
	key, _ := testKey("release")
	p := testPatch()
	data, err := Sign(p, key)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return p, data
}

// signRaw wraps any payload bytes in an envelope signed by key, with the
// canonical keyid of signer: for tests of what Load does after the
// signature check, and of envelopes Sign would never write.
func signRaw(t testing.TB, payload []byte, key PrivateKey, signer PublicKey) []byte {
	t.Helper()
	env := envelope{
		PayloadType: PayloadType,
		Payload:     base64.StdEncoding.EncodeToString(payload),
		Signatures: []signature{{
			KeyID: KeyID(signer),
			Sig:   base64.StdEncoding.EncodeToString(ed25519.Sign(ed25519.PrivateKey(key), pae(PayloadType, payload))),
		}},
	}
	data, err := env.marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// nonZeroPadding changes the last data character of padded base64 so that
// its unused low bits are not zero: the same bytes for a lenient decoder.
func nonZeroPadding(s string) string {
	i := strings.IndexByte(s, '=') - 1
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	return s[:i] + string(alphabet[strings.IndexByte(alphabet, s[i])|1]) + s[i+1:]
}

// checkLoadError fails unless err is a one-line error of this package's
// kinds.
func checkLoadError(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrSignature) {
		t.Fatalf("error %q wraps neither ErrFormat nor ErrSignature", err)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "patch: ") {
		t.Fatalf("error %q is not one line starting with \"patch: \"", msg)
	}
}
