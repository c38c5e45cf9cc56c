package pki

import (
	"errors"
	"fmt"
)

var (
	// ErrDataDir is wrapped by every error about the files of the data
	// directory: missing, unreadable, malformed, mismatched or expired.
	ErrDataDir = errors.New("pki: unusable data directory")

	// ErrCSR is wrapped by every error of Issue about the certificate
	// signing request: not PEM, not a CSR, a bad signature, a weak key.
	ErrCSR = errors.New("pki: bad certificate request")

	// ErrInvalid is wrapped by errors about arguments: a device id, a host
	// name, a client certificate or key given to ClientTLS.
	ErrInvalid = errors.New("pki: invalid argument")

	// ErrNoClientCert is returned by DeviceID for a connection that has no
	// verified client certificate (an admin or an anonymous client).
	ErrNoClientCert = errors.New("pki: no verified client certificate")
)

// Error is the error type of this package. Its message is one line that
// starts with "pki: ", names the file when there is one, and says what is
// wrong and what to do. errors.Is reports its Kind and its cause.
type Error struct {
	// Kind is ErrDataDir, ErrCSR or ErrInvalid.
	Kind error
	// Path is the file concerned, if any.
	Path string
	// Msg says what is wrong.
	Msg string
	// Err is the underlying cause, if any (for example an *fs.PathError).
	Err error
}

func (e *Error) Error() string {
	s := "pki: "
	if e.Path != "" {
		s += e.Path + ": "
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the kind and the cause of e.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func dirError(path string, err error, format string, args ...any) error {
	return &Error{Kind: ErrDataDir, Path: path, Msg: fmt.Sprintf(format, args...), Err: err}
}

func csrError(err error, format string, args ...any) error {
	return &Error{Kind: ErrCSR, Msg: fmt.Sprintf(format, args...), Err: err}
}

func invalidError(err error, format string, args ...any) error {
	return &Error{Kind: ErrInvalid, Msg: fmt.Sprintf(format, args...), Err: err}
}
