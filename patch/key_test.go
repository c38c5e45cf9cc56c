package patch

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteKeyPair(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	name := filepath.Join(dir, "release")
	pub, err := WriteKeyPair(name)
	if err != nil {
		t.Fatalf("WriteKeyPair: %v", err)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
		head string
	}{
		{name + ".key", 0o600, "-----BEGIN PRIVATE KEY-----\n"},
		{name + ".pub", 0o644, "-----BEGIN PUBLIC KEY-----\n"},
	} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may take bits off the .pub file, never add any.
		if m := fi.Mode().Perm(); m&^f.mode != 0 || (f.mode == 0o600 && m != 0o600) {
			t.Errorf("%s has mode %v, want %v", f.path, m, f.mode)
		}
		data, _ := os.ReadFile(f.path)
		if !strings.HasPrefix(string(data), f.head) {
			t.Errorf("%s starts %q, want %q", f.path, data, f.head)
		}
	}

	priv, err := ReadPrivateKey(name + ".key")
	if err != nil {
		t.Fatalf("ReadPrivateKey: %v", err)
	}
	if !priv.Public().Equal(pub) {
		t.Error("private key read back does not match the public key returned")
	}
	got, err := ReadPublicKey(name + ".pub")
	if err != nil {
		t.Fatalf("ReadPublicKey: %v", err)
	}
	if diff := cmp.Diff(pub, got); diff != "" {
		t.Errorf("ReadPublicKey (-want +got):\n%s", diff)
	}

	// Never overwrite, not even half of a pair.
	before, _ := os.ReadFile(name + ".key")
	if _, err := WriteKeyPair(name); err == nil || !strings.Contains(err.Error(), "release.key already exists") {
		t.Errorf("second WriteKeyPair = %v, want an error saying release.key exists", err)
	}
	if after, _ := os.ReadFile(name + ".key"); string(after) != string(before) {
		t.Error("second WriteKeyPair changed the existing key")
	}
	os.Remove(name + ".key")
	if _, err := WriteKeyPair(name); err == nil || !strings.Contains(err.Error(), "release.pub already exists") {
		t.Errorf("WriteKeyPair with only .pub present = %v, want an error saying release.pub exists", err)
	}
	if _, err := os.Stat(name + ".key"); !errors.Is(err, os.ErrNotExist) {
		t.Error("WriteKeyPair wrote a .key although the .pub existed")
	}

	if _, err := WriteKeyPair(filepath.Join(dir, "missing", "k")); err == nil {
		t.Error("WriteKeyPair into a missing directory succeeded")
	}
}

func TestReadKeyErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	priv, pub := testKey("release")
	privPEM, _ := MarshalPrivateKey(priv)
	pubPEM, _ := MarshalPublicKey(pub)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPubDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})
	ecPubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPubDER})

	tests := []struct {
		name    string
		path    string
		private bool
		want    string
	}{
		{"public as private", write("a.pub", string(pubPEM)), true, `holds a "PUBLIC KEY" PEM block, not a private key (give the .key file, not the .pub file)`},
		{"private as public", write("a.key", string(privPEM)), false, `holds a "PRIVATE KEY" PEM block, not a public key`},
		{"not PEM", write("b.key", "hello"), true, "is not a PEM key file"},
		{"patch file", write("c.key", `{"payloadType":"x"}`), true, "is not a PEM key file"},
		{"empty", write("d.pub", ""), false, "is not a PEM key file"},
		{"two blocks", write("e.key", string(privPEM)+string(privPEM)), true, "more than one PEM block"},
		{"ecdsa private", write("f.key", string(ecPEM)), true, "not ed25519"},
		{"ecdsa public", write("f.pub", string(ecPubPEM)), false, "not ed25519"},
		{"bad DER", write("g.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), true, "malformed private key"},
		{"bad public DER", write("g.pub", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), false, "malformed public key"},
		{"huge", write("h.key", strings.Repeat("x", maxKeyFile+1)), true, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var err error
			if tt.private {
				_, err = ReadPrivateKey(tt.path)
			} else {
				_, err = ReadPublicKey(tt.path)
			}
			if !errors.Is(err, ErrKeyFile) {
				t.Fatalf("got %v, want an ErrKeyFile", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "patch: "+tt.path) || strings.Contains(msg, "\n") || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q should be one line naming the file and saying %q", msg, tt.want)
			}
		})
	}
	if _, err := ReadPrivateKey(filepath.Join(dir, "missing.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadPrivateKey(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestKeyID(t *testing.T) {
	t.Parallel()
	_, pub := testKey("release")
	id := KeyID(pub)
	if len(id) != 16 {
		t.Fatalf("KeyID = %q, want 16 hex digits", id)
	}
	if _, err := hex.DecodeString(id); err != nil {
		t.Errorf("KeyID %q is not hex", id)
	}
	if id == KeyID(PublicKey(make([]byte, 32))) {
		t.Error("different keys have the same id")
	}
	if got := KeyID(pub[:31]); got != "invalid-key" {
		t.Errorf("KeyID(31 bytes) = %q", got)
	}
	if pub.String() != id {
		t.Errorf("PublicKey.String = %q, want %q", pub.String(), id)
	}
}

func TestPrivateKeyDoesNotPrint(t *testing.T) {
	t.Parallel()
	priv, pub := testKey("release")
	seed := hex.EncodeToString(priv[:32])
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		got := fmt.Sprintf(verb, priv)
		if strings.Contains(strings.ToLower(got), seed[:16]) {
			t.Errorf("Sprintf(%s, key) = %q shows key material", verb, got)
		}
		if want := "PrivateKey(" + KeyID(pub) + ")"; got != want {
			t.Errorf("Sprintf(%s, key) = %q, want %q", verb, got, want)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	priv, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(priv) != 64 || len(pub) != 32 || !priv.Public().Equal(pub) {
		t.Errorf("GenerateKey gave a %d-byte private key and a %d-byte public key that do not match", len(priv), len(pub))
	}
	if PrivateKey(priv[:10]).Public() != nil {
		t.Error("Public of a short key is not nil")
	}
}
