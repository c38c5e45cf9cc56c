package pki

import (
	"encoding/base64"
	"testing"
)

func TestToken(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		token, hash := NewToken()
		if seen[token] {
			t.Fatalf("token %q returned twice", token)
		}
		seen[token] = true
		if b, err := base64.RawURLEncoding.DecodeString(token); err != nil || len(b) != 32 {
			t.Fatalf("token %q is not 32 bytes of base64url: %v", token, err)
		}
		if hash != TokenHash(token) || TokenHash(token) != TokenHash(token) {
			t.Fatalf("hash of %q is not stable", token)
		}
		if len(hash) != 64 {
			t.Fatalf("hash %q is not 64 hex digits", hash)
		}
	}
	// The SHA-256 of "abc".
	if got, want := TokenHash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("TokenHash(abc) = %s, want %s", got, want)
	}
}

func TestEqualHash(t *testing.T) {
	t.Parallel()
	token, hash := NewToken()
	other, _ := NewToken()
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{TokenHash(token), hash, true},
		{TokenHash(other), hash, false},
		{hash[:63] + "x", hash, false},
		{hash[:32], hash, false},
		{"", hash, false},
		{"", "", false},
	} {
		if got := EqualHash(tc.a, tc.b); got != tc.want {
			t.Errorf("EqualHash(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
