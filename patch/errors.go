package patch

import (
	"errors"
	"fmt"
)

var (
	// ErrFormat is wrapped by every error about a malformed or invalid patch:
	// a damaged envelope, a payload that does not decode, or a patch that
	// breaks a rule of Validate.
	ErrFormat = errors.New("patch: malformed patch")

	// ErrSignature is wrapped by every error about the signature of a patch
	// file: it is missing, does not verify, or names another key.
	ErrSignature = errors.New("patch: bad signature")
)

// UntrustedSignerError reports a patch whose (valid) signature was made by a
// key that is not among the trusted keys.
type UntrustedSignerError struct {
	// KeyID is the key id of the signer (see KeyID).
	KeyID string
}

func (e *UntrustedSignerError) Error() string {
	return fmt.Sprintf("patch: signed by untrusted key %s; if you trust its owner, pass the public key with --trust KEY.pub", e.KeyID)
}

// Error is the error type of this package for malformed patches and bad
// signatures. Its message is one line that starts with "patch: " and says
// what failed; Is reports its kind, ErrFormat or ErrSignature.
type Error struct {
	// Kind is ErrFormat or ErrSignature.
	Kind error
	// File names the patch file, when known.
	File string
	// Msg says what is wrong, e.g. "truncated payload at offset 1234".
	Msg string
}

func (e *Error) Error() string {
	if e.File != "" {
		return "patch: " + e.File + ": " + e.Msg
	}
	return "patch: " + e.Msg
}

// Unwrap returns the kind of e, so errors.Is(err, ErrFormat) works.
func (e *Error) Unwrap() error { return e.Kind }

func formatErrorf(format string, args ...any) error {
	return &Error{Kind: ErrFormat, Msg: fmt.Sprintf(format, args...)}
}

func signatureErrorf(format string, args ...any) error {
	return &Error{Kind: ErrSignature, Msg: fmt.Sprintf(format, args...)}
}
