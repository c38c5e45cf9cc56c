package patch

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSignLoadRoundTrip(t *testing.T) {
	t.Parallel()
	key, pub := testKey("release")
	p := testPatch()
	data, err := Sign(p, key)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !p.Signer.Equal(pub) {
		t.Errorf("Sign set Signer %s, want %s", p.Signer, pub)
	}
	got, err := Load(data)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("Load(Sign(p)) differs from p (-want +got):\n%s", diff)
	}
	if err := Verify(got, []PublicKey{pub}); err != nil {
		t.Errorf("Verify with the signer trusted: %v", err)
	}

	// Signing is deterministic: one patch and key, one file, one digest.
	again, err := Sign(testPatch(), key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, again) || FileDigest(data) != FileDigest(again) {
		t.Error("signing the same patch twice gave different files")
	}
	if d := FileDigest(data); len(d) != 64 || strings.Trim(d, "0123456789abcdef") != "" {
		t.Errorf("FileDigest = %q, want 64 lowercase hex digits", d)
	}
}

func TestSignFileShape(t *testing.T) {
	t.Parallel()
	_, data := signedTestFile(t)
	want := `{"payloadType":"application/vnd.hotpatch.patch.v1","payload":"`
	if !bytes.HasPrefix(data, []byte(want)) {
		t.Errorf("file starts %q, want %q", data[:len(want)], want)
	}
	if !bytes.HasSuffix(data, []byte("\"}]}\n")) || bytes.Count(data, []byte("\n")) != 1 {
		t.Errorf("file does not end in one newline after the envelope: %q", data[len(data)-20:])
	}
}

func TestPAE(t *testing.T) {
	t.Parallel()
	// The test vector of the DSSE protocol specification.
	got := string(pae("http://example.com/HelloWorld", []byte("hello world")))
	want := "DSSEv1 29 http://example.com/HelloWorld 11 hello world"
	if got != want {
		t.Errorf("pae = %q, want %q", got, want)
	}
}

func TestLoadEveryByteFlip(t *testing.T) {
	t.Parallel()
	_, data := signedTestFile(t)
	for _, mask := range []byte{0x01, 0x20, 0x80} {
		bad := 0
		for i := range data {
			m := bytes.Clone(data)
			m[i] ^= mask
			p, err := Load(m)
			if err == nil || p != nil || (!errors.Is(err, ErrFormat) && !errors.Is(err, ErrSignature)) {
				if bad++; bad <= 5 {
					t.Errorf("flip byte %d (%q) with %#x: Load = %v, %v; want nil and an ErrFormat or ErrSignature", i, data[i], mask, p != nil, err)
				}
			}
		}
	}
}

func TestLoadEveryTruncation(t *testing.T) {
	t.Parallel()
	_, data := signedTestFile(t)
	for n := 0; n < len(data); n++ {
		p, err := Load(data[:n])
		if p != nil || err == nil {
			t.Fatalf("Load(first %d of %d bytes) succeeded", n, len(data))
		}
		checkLoadError(t, err)
	}
}

func TestLoadRejects(t *testing.T) {
	t.Parallel()
	key, pub := testKey("release")
	otherKey, otherPub := testKey("other")
	p, data := signedTestFile(t)
	payload, err := encodePayload(p)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(payload)
	env := func(modify func(*envelope)) []byte {
		e := envelope{}
		if err := jsonUnmarshal(data, &e); err != nil {
			t.Fatal(err)
		}
		modify(&e)
		out, err := e.marshal()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	replace := func(old, new string) []byte {
		if !bytes.Contains(data, []byte(old)) {
			t.Fatalf("test file lacks %q", old)
		}
		return bytes.Replace(data, []byte(old), []byte(new), 1)
	}
	withVersion := func(v uint16) []byte {
		b := bytes.Clone(payload)
		binary.LittleEndian.PutUint16(b[len(payloadMagic):], v)
		return b
	}
	otherSigned := testPatch()
	otherFile, err := Sign(otherSigned, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	var otherEnv envelope
	if err := jsonUnmarshal(otherFile, &otherEnv); err != nil {
		t.Fatal(err)
	}

	if !bytes.Equal(env(func(*envelope) {}), data) {
		t.Fatal("re-marshalling the signed file is not the identity; the cases below would test nothing")
	}
	if strings.Count(b64, "=") == 0 || !strings.ContainsAny(b64, "+/") {
		t.Fatal("the test payload's base64 has no padding or no + and /; change testPatch so the cases below bite")
	}

	tests := []struct {
		name string
		data []byte
		kind error
		want string
	}{
		{"empty", nil, ErrFormat, "truncated file"},
		{"elf", []byte("\x7fELF\x02\x01\x01"), ErrFormat, "not a hotpatch file"},
		{"pem key", []byte("-----BEGIN PRIVATE KEY-----\n"), ErrFormat, "not a hotpatch file"},
		{"raw payload", payload, ErrFormat, "not a hotpatch file"},
		{"oversized", append(bytes.Clone(data), make([]byte, MaxFileSize)...), ErrFormat, "more than the limit"},
		{"trailing newline", append(bytes.Clone(data), '\n'), ErrFormat, "not in canonical form"},
		{"no newline", data[:len(data)-1], ErrFormat, "not in canonical form"},
		{"crlf", append(bytes.Clone(data[:len(data)-1]), '\r', '\n'), ErrFormat, "not in canonical form"},
		{"indented", replace(`,"payload"`, `, "payload"`), ErrFormat, "not in canonical form"},
		{"trailing garbage", append(bytes.Clone(data), "{}"...), ErrFormat, "after top-level value"},
		{"unknown field", replace(`]}`+"\n", `],"extra":1}`+"\n"), ErrFormat, "unknown field"},
		{"unknown signature field", replace(`"sig":`, `"cert":"x","sig":`), ErrFormat, "unknown field"},
		{"duplicate key", replace(`"payload":"`, `"payload":"`+b64+`","payload":"`), ErrFormat, "not in canonical form"},
		{"key case", replace(`"payload":`, `"Payload":`), ErrFormat, "not in canonical form"},
		{"escaped key", replace(`"payload":`, `"p\u0061yload":`), ErrFormat, "not in canonical form"},
		{"wrong payload type", env(func(e *envelope) { e.PayloadType = "application/vnd.in-toto+json" }), ErrFormat, "payload type"},
		{"payload type case", env(func(e *envelope) { e.PayloadType = strings.ToUpper(PayloadType) }), ErrFormat, "payload type"},
		{"no signatures", env(func(e *envelope) { e.Signatures = nil }), ErrSignature, "0 signatures"},
		{"two signatures", env(func(e *envelope) { e.Signatures = append(e.Signatures, e.Signatures[0]) }), ErrSignature, "2 signatures"},
		{"keyid of another key", env(func(e *envelope) { e.Signatures[0].KeyID = KeyID(otherPub) }), ErrSignature, "does not match the signer"},
		{"keyid empty", env(func(e *envelope) { e.Signatures[0].KeyID = "" }), ErrSignature, "does not match the signer"},
		{"signature by another key, keyid matches", env(func(e *envelope) { e.Signatures[0].Sig = otherEnv.Signatures[0].Sig }), ErrSignature, "does not verify"},
		{"signer swapped, signed by another key", env(func(e *envelope) { e.Payload = otherEnv.Payload }), ErrSignature, "does not match the signer"},
		{"signature short", env(func(e *envelope) { e.Signatures[0].Sig = e.Signatures[0].Sig[:40] + "==" }), ErrSignature, "signature is not"},
		{"signature url base64", env(func(e *envelope) { e.Signatures[0].Sig = "_" + e.Signatures[0].Sig[1:] }), ErrSignature, "signature is not"},
		{"payload url base64", env(func(e *envelope) { e.Payload = base64.URLEncoding.EncodeToString(payload) }), ErrFormat, "canonical standard base64"},
		{"payload unpadded", env(func(e *envelope) { e.Payload = base64.RawStdEncoding.EncodeToString(payload) }), ErrFormat, "canonical standard base64"},
		{"payload padding bits", env(func(e *envelope) { e.Payload = nonZeroPadding(e.Payload) }), ErrFormat, "canonical standard base64"},
		// encoding/base64 skips newlines even in strict mode, and JSON keeps
		// the escape through a re-marshal: only the canonical base64 check
		// catches this one.
		{"payload with newline", env(func(e *envelope) { e.Payload = e.Payload[:8] + "\n" + e.Payload[8:] }), ErrFormat, "canonical standard base64"},
		{"payload not base64", env(func(e *envelope) { e.Payload = "!!!!" }), ErrFormat, "canonical standard base64"},
		{"signed garbage", signRaw(t, []byte("hello"), key, pub), ErrFormat, "magic"},
		{"signed empty payload", signRaw(t, nil, key, pub), ErrFormat, "magic"},
		{"signed truncated payload", signRaw(t, payload[:len(payload)-3], key, pub), ErrFormat, "truncated payload at offset"},
		{"signed payload with trailing byte", signRaw(t, append(bytes.Clone(payload), 0), key, pub), ErrFormat, "trailing bytes"},
		{"signed future version", signRaw(t, withVersion(4), key, pub), ErrFormat, "format version 4 is not supported"},
		{"signed older version", signRaw(t, withVersion(1), key, pub), ErrFormat, "format version 1 is not supported"},
		{"signed by a key that is not the signer", signRaw(t, payload, otherKey, pub), ErrSignature, "does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Load(tt.data)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", got.ID)
			}
			checkLoadError(t, err)
			if !errors.Is(err, tt.kind) {
				t.Errorf("Load error %q does not wrap %v", err, tt.kind)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	t.Parallel()
	p, data := signedTestFile(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "ledger.hpatch")
	if err := os.WriteFile(good, data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadFile(good)
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("LoadFile differs (-want +got):\n%s", diff)
	}

	foreign := filepath.Join(dir, "ledger")
	if err := os.WriteFile(foreign, []byte("\x7fELF\x02\x01\x01\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFile(foreign)
	checkLoadError(t, err)
	if want := "patch: " + foreign + ": not a hotpatch file"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("LoadFile(ELF) = %q, want prefix %q", err, want)
	}

	huge := filepath.Join(dir, "huge.hpatch")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = LoadFile(huge)
	checkLoadError(t, err)
	if !strings.Contains(err.Error(), "more than the limit") {
		t.Errorf("LoadFile(huge) = %q", err)
	}

	_, err = LoadFile(filepath.Join(dir, "missing.hpatch"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadFile(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	_, pub := testKey("release")
	_, other := testKey("other")
	p, _ := signedTestFile(t)

	if err := Verify(p, []PublicKey{other, pub}); err != nil {
		t.Errorf("Verify(signer among trusted) = %v", err)
	}
	for _, trusted := range [][]PublicKey{nil, {other}, {pub[:16]}} {
		err := Verify(p, trusted)
		var ue *UntrustedSignerError
		if !errors.As(err, &ue) {
			t.Fatalf("Verify(untrusted %v) = %v, want *UntrustedSignerError", trusted, err)
		}
		if ue.KeyID != KeyID(pub) {
			t.Errorf("UntrustedSignerError.KeyID = %q, want %q", ue.KeyID, KeyID(pub))
		}
		if msg := err.Error(); !strings.Contains(msg, KeyID(pub)) || !strings.Contains(msg, "--trust KEY.pub") {
			t.Errorf("message %q should name the key and --trust KEY.pub", msg)
		}
	}
	if err := Verify(testPatch(), []PublicKey{pub}); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify(unsigned) = %v, want ErrSignature", err)
	}
}

func TestSignRejects(t *testing.T) {
	t.Parallel()
	key, _ := testKey("release")
	p := testPatch()
	p.Functions[0].NewSize = 0x1000
	if _, err := Sign(p, key); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), `"parse_header"`) {
		t.Errorf("Sign(invalid) = %v, want ErrFormat naming parse_header", err)
	}
	if p.Signer != nil {
		t.Errorf("Sign of an invalid patch set Signer")
	}
	if _, err := Sign(testPatch(), key[:32]); !errors.Is(err, ErrKeyFile) {
		t.Errorf("Sign(short key) = %v, want ErrKeyFile", err)
	}
	big := testPatch()
	big.Text = make([]byte, maxPayload)
	big.Functions[3].NewOffset = maxPayload - 0x40
	if _, err := Sign(big, key); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "payload is") {
		t.Errorf("Sign(oversized) = %v, want ErrFormat about the payload size", err)
	}
}

// benchPatch is a large patch: 4 MiB of code, 8192 functions and 200000
// relocations.
func benchPatch() *Patch {
	p := testPatch()
	p.Text = make([]byte, 4<<20)
	p.Functions, p.Relocs = nil, nil
	for i := range 8192 {
		p.Functions = append(p.Functions, Function{Name: fmt.Sprintf("func_%d", i), OldAddr: uint64(0x10000 + i*0x1000), OldSize: 0x800,
			NewOffset: uint64(i * 512), NewSize: 512})
	}
	for i := range 200000 {
		p.Relocs = append(p.Relocs, Reloc{Section: Text, Offset: uint64(i * 16), Type: PC32, Addend: -4, Target: RelocTarget{Kind: InModule, Addr: 0x4000}})
	}
	p.Objects = nil
	p.ROData, p.Data, p.BSSSize = nil, nil, 0
	return p
}

func BenchmarkSign(b *testing.B) {
	key, _ := testKey("release")
	p := benchPatch()
	for b.Loop() {
		data, err := Sign(p, key)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
	}
}

func BenchmarkLoad(b *testing.B) {
	key, _ := testKey("release")
	data, err := Sign(benchPatch(), key)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(data); err != nil {
			b.Fatal(err)
		}
	}
}
