package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
)

// NewToken returns a new random token (32 bytes from crypto/rand, 43
// characters of unpadded base64url) and its TokenHash. Give the token to its
// user once; store only the hash. (crypto/rand.Read cannot fail since Go
// 1.24, so there is no error.)
func NewToken() (token, hash string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, TokenHash(token)
}

// TokenHash returns the SHA-256 of token in lowercase hex: what the server
// stores and compares instead of the token.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// EqualHash reports whether a and b are the same non-empty hash, in time
// that does not depend on where they differ. To check a presented token
// against a stored hash: EqualHash(TokenHash(token), stored).
func EqualHash(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
