package patch

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// PayloadType is the DSSE payload type of a hotpatch file.
const PayloadType = "application/vnd.hotpatch.patch.v1"

// MaxFileSize is the largest patch file Load accepts.
const MaxFileSize = 96 << 20

// envelopePrefix is how every patch file starts; anything else is not one.
const envelopePrefix = `{"payloadType":"`

// envelope is the DSSE JSON envelope. The field order is the canonical one
// that Sign writes and Load demands.
type envelope struct {
	PayloadType string      `json:"payloadType"`
	Payload     string      `json:"payload"`
	Signatures  []signature `json:"signatures"`
}

type signature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// marshal returns the canonical file bytes of env: compact JSON and "\n".
func (env *envelope) marshal() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(len(env.Payload) + 64 + len(env.PayloadType) + 128*len(env.Signatures))
	if err := json.NewEncoder(&b).Encode(env); err != nil { // compact, with "\n"
		return nil, fmt.Errorf("patch: encode envelope: %w", err)
	}
	return b.Bytes(), nil
}

// pae is the DSSE pre-authentication encoding of a payload: what is signed.
func pae(payloadType string, payload []byte) []byte {
	b := make([]byte, 0, 32+len(payloadType)+len(payload))
	b = append(b, "DSSEv1 "...)
	b = strconv.AppendInt(b, int64(len(payloadType)), 10)
	b = append(b, ' ')
	b = append(b, payloadType...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(payload)), 10)
	b = append(b, ' ')
	return append(b, payload...)
}

// Sign validates p, records the public half of key as p.Signer, and returns
// the signed patch file. The signer key is part of the signed payload.
func Sign(p *Patch, key PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("patch: signing key is %d bytes, not an ed25519 private key: %w", len(key), ErrKeyFile)
	}
	signed := *p
	signed.Signer = key.Public()
	if err := signed.Validate(); err != nil {
		return nil, err
	}
	payload, err := encodePayload(&signed)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(ed25519.PrivateKey(key), pae(PayloadType, payload))
	env := envelope{
		PayloadType: PayloadType,
		Payload:     base64.StdEncoding.EncodeToString(payload),
		Signatures:  []signature{{KeyID: KeyID(signed.Signer), Sig: base64.StdEncoding.EncodeToString(sig)}},
	}
	file, err := env.marshal()
	if err != nil {
		return nil, err
	}
	if len(file) > MaxFileSize {
		return nil, formatErrorf("signed file would be %d bytes, more than the limit of %d", len(file), MaxFileSize)
	}
	p.Signer = signed.Signer
	return file, nil
}

// Load parses a patch file and checks that it is well formed, canonical and
// signed by the key it carries; it returns the patch with Signer set.
// Whether that signer is trusted is a separate question: ask Verify.
//
// Every error is one line starting with "patch: " and wraps ErrFormat or
// ErrSignature (it is an *Error).
func Load(data []byte) (*Patch, error) {
	if len(data) > MaxFileSize {
		return nil, formatErrorf("file is %d bytes, more than the limit of %d", len(data), MaxFileSize)
	}
	if !bytes.HasPrefix(data, []byte(envelopePrefix)) {
		if len(data) < len(envelopePrefix) && bytes.HasPrefix([]byte(envelopePrefix), data) {
			return nil, formatErrorf("truncated file (%d bytes)", len(data))
		}
		return nil, formatErrorf("not a hotpatch file (it does not start with %s)", envelopePrefix)
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, formatErrorf("malformed envelope: %s", jsonError(err, data))
	}
	// encoding/json ignores unknown fields, matches keys case-insensitively,
	// accepts duplicate keys, any spacing and many spellings of the same
	// string. Demanding the exact bytes Sign writes makes the file
	// canonical: one patch, one file.
	if canon, err := env.marshal(); err != nil || !bytes.Equal(canon, data) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(new(envelope)); err != nil {
			return nil, formatErrorf("malformed envelope: %s", jsonError(err, data))
		}
		return nil, formatErrorf("envelope is not in canonical form (compact JSON, fields payloadType, payload, signatures, one trailing newline)")
	}
	if env.PayloadType != PayloadType {
		return nil, formatErrorf("payload type is %q, want %q", env.PayloadType, PayloadType)
	}
	if len(env.Signatures) != 1 {
		return nil, signatureErrorf("file has %d signatures, want exactly 1", len(env.Signatures))
	}
	payload, err := decodeBase64(env.Payload)
	if err != nil {
		return nil, formatErrorf("payload is not canonical standard base64")
	}
	sig, err := decodeBase64(env.Signatures[0].Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, signatureErrorf("signature is not %d bytes of canonical standard base64", ed25519.SignatureSize)
	}
	signer, err := payloadSigner(payload)
	if err != nil {
		return nil, err
	}
	if id := KeyID(signer); env.Signatures[0].KeyID != id {
		return nil, signatureErrorf("signature key id %q does not match the signer %s in the payload", env.Signatures[0].KeyID, id)
	}
	if !ed25519.Verify(ed25519.PublicKey(signer), pae(env.PayloadType, payload), sig) {
		return nil, signatureErrorf("signature does not verify (key %s): the file was changed or damaged after signing", KeyID(signer))
	}
	return decodePayload(payload)
}

// LoadFile reads and loads a patch file (see Load). Errors name the file.
func LoadFile(path string) (*Patch, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > MaxFileSize {
		return nil, &Error{Kind: ErrFormat, File: path, Msg: fmt.Sprintf("file is %d bytes, more than the limit of %d", fi.Size(), MaxFileSize)}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("patch: read %s: %w", path, err)
	}
	p, err := Load(data)
	if e, ok := err.(*Error); ok {
		e.File = path
	}
	return p, err
}

// decodeBase64 decodes standard, padded base64 and insists that s is the
// one encoding of its bytes: the decoder alone ignores newlines (even in
// strict mode), which would let a file change without its payload changing.
func decodeBase64(s string) ([]byte, error) {
	// Strict padded decoding leaves newlines as the only other spelling.
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("base64 with line breaks")
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, err
	}
	if base64.StdEncoding.EncodedLen(len(b)) != len(s) {
		return nil, fmt.Errorf("not canonical base64")
	}
	return b, nil
}

// jsonError renders a JSON decoding error with the offset where it happened.
func jsonError(err error, data []byte) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Sprintf("%v at offset %d", e, e.Offset)
	case *json.UnmarshalTypeError:
		return fmt.Sprintf("field %q has the wrong type at offset %d", e.Field, e.Offset)
	}
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return fmt.Sprintf("truncated after %d bytes", len(data))
	}
	return err.Error()
}

// Verify reports whether p was signed by one of the trusted keys. It
// returns nil if so, an *UntrustedSignerError if p has a signer that is
// not trusted, and an error wrapping ErrSignature if p has no signer.
// Load has already checked that the signature matches p.Signer.
func Verify(p *Patch, trusted []PublicKey) error {
	if len(p.Signer) != ed25519.PublicKeySize {
		return signatureErrorf("patch %q is not signed", p.ID)
	}
	for _, k := range trusted {
		if p.Signer.Equal(k) {
			return nil
		}
	}
	return &UntrustedSignerError{KeyID: KeyID(p.Signer)}
}

// FileDigest returns the content address of a patch file: the lowercase hex
// SHA-256 of its bytes. The file format is canonical and ed25519 signatures
// are deterministic, so a patch signed by a given key has exactly one digest.
func FileDigest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
