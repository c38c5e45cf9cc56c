package patch

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// PublicKey is a raw 32-byte ed25519 public key: the signer of a patch, or a
// key that the applying side trusts.
type PublicKey []byte

// PrivateKey is a raw 64-byte ed25519 private key (seed followed by the
// public key, as in crypto/ed25519). It never prints its bytes: every fmt
// verb renders it as "PrivateKey(KEYID)".
type PrivateKey []byte

// Public returns the public half of k, or nil if k is not an ed25519 private key.
func (k PrivateKey) Public() PublicKey {
	if len(k) != ed25519.PrivateKeySize {
		return nil
	}
	return PublicKey(bytes.Clone(k[32:]))
}

// Format keeps private key material out of logs and error messages.
func (k PrivateKey) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "PrivateKey(%s)", KeyID(k.Public()))
}

// String returns the key id of pub (see KeyID).
func (pub PublicKey) String() string { return KeyID(pub) }

// Equal reports whether pub and other are the same key.
func (pub PublicKey) Equal(other PublicKey) bool { return bytes.Equal(pub, other) }

// KeyID names a public key in files and messages: the first 16 hex digits of
// the SHA-256 of the raw 32-byte key. It is a hint, never a substitute for
// comparing the key itself. KeyID of anything that is not a 32-byte key is
// "invalid-key".
func KeyID(pub PublicKey) string {
	if len(pub) != ed25519.PublicKeySize {
		return "invalid-key"
	}
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// GenerateKey makes a new ed25519 signing key pair from crypto/rand.
func GenerateKey() (PrivateKey, PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("patch: generate key: %w", err)
	}
	return PrivateKey(priv), PublicKey(pub), nil
}

// ErrKeyFile is wrapped by every error about the content of a key file.
var ErrKeyFile = errors.New("patch: bad key file")

// PEM block types of the key files (PKCS#8 and PKIX, as written by openssl).
const (
	pemPrivate = "PRIVATE KEY"
	pemPublic  = "PUBLIC KEY"
)

// MarshalPrivateKey returns k as a PEM "PRIVATE KEY" block (PKCS#8), the
// content of a NAME.key file.
func MarshalPrivateKey(k PrivateKey) ([]byte, error) {
	if len(k) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("patch: private key is %d bytes, want %d: %w", len(k), ed25519.PrivateKeySize, ErrKeyFile)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ed25519.PrivateKey(k))
	if err != nil {
		return nil, fmt.Errorf("patch: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der}), nil
}

// MarshalPublicKey returns pub as a PEM "PUBLIC KEY" block (PKIX), the
// content of a NAME.pub file.
func MarshalPublicKey(pub PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("patch: public key is %d bytes, want %d: %w", len(pub), ed25519.PublicKeySize, ErrKeyFile)
	}
	der, err := x509.MarshalPKIXPublicKey(ed25519.PublicKey(pub))
	if err != nil {
		return nil, fmt.Errorf("patch: encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der}), nil
}

// WriteKeyPair generates a key pair and writes it to name+".key" (PKCS#8
// PEM, mode 0600) and name+".pub" (PKIX PEM, mode 0644). It never overwrites
// a file: if either exists, it writes nothing and says so.
func WriteKeyPair(name string) (PublicKey, error) {
	keyPath, pubPath := name+".key", name+".pub"
	for _, p := range []string{keyPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("patch: %s already exists; refusing to overwrite a key (choose another name or remove it)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("patch: %w", err)
		}
	}
	priv, pub, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	privPEM, err := MarshalPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	pubPEM, err := MarshalPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if err := writeNew(keyPath, privPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	return pub, nil
}

// writeNew creates path (which must not exist) with mode perm and writes data.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("patch: %s already exists; refusing to overwrite a key (choose another name or remove it)", path)
	}
	if err != nil {
		return fmt.Errorf("patch: %w", err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return fmt.Errorf("patch: write %s: %w", path, werr)
	}
	return nil
}

// maxKeyFile bounds what ReadPrivateKey and ReadPublicKey read: a PEM key
// file is a few hundred bytes.
const maxKeyFile = 64 << 10

// ReadPrivateKey reads a NAME.key file written by WriteKeyPair (or by
// "openssl genpkey -algorithm ed25519").
func ReadPrivateKey(path string) (PrivateKey, error) {
	der, err := readPEM(path, pemPrivate, "a private key", "give the .key file, not the .pub file")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("patch: %s: malformed private key: %v: %w", path, err, ErrKeyFile)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("patch: %s: private key is %T, not ed25519 (make one with hotpatch keygen): %w", path, k, ErrKeyFile)
	}
	return PrivateKey(ek), nil
}

// ReadPublicKey reads a NAME.pub file written by WriteKeyPair (or by
// "openssl pkey -pubout").
func ReadPublicKey(path string) (PublicKey, error) {
	der, err := readPEM(path, pemPublic, "a public key", "give the .pub file")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("patch: %s: malformed public key: %v: %w", path, err, ErrKeyFile)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("patch: %s: public key is %T, not ed25519: %w", path, k, ErrKeyFile)
	}
	return PublicKey(ek), nil
}

// readPEM reads path and returns the DER bytes of its single PEM block of
// type want.
func readPEM(path, want, what, hint string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("patch: read %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("patch: %s is larger than %d bytes, not %s: %w", path, maxKeyFile, what, ErrKeyFile)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("patch: %s is not a PEM key file (want %s): %w", path, what, ErrKeyFile)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("patch: %s holds more than one PEM block; want only %s: %w", path, what, ErrKeyFile)
	}
	if block.Type != want {
		return nil, fmt.Errorf("patch: %s holds a %q PEM block, not %s (%s): %w", path, block.Type, what, hint, ErrKeyFile)
	}
	if len(block.Headers) != 0 {
		return nil, fmt.Errorf("patch: %s: PEM block has headers (encrypted keys are not supported): %w", path, ErrKeyFile)
	}
	return block.Bytes, nil
}
