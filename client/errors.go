package client

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a non-2xx answer of the server.
type Error struct {
	Status  int    // HTTP status code
	Message string // the server's one-line message (api.Error), or the status text
}

func (e *Error) Error() string {
	return fmt.Sprintf("server: %s (HTTP %d)", e.Message, e.Status)
}

// IsStatus reports whether err is, or wraps, an *Error with HTTP status code.
func IsStatus(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == code
}

// DigestError is a patch file whose SHA-256 is not the one asked for.
type DigestError struct {
	Want, Got string // hex
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("client: the server sent a patch file with SHA-256 %s instead of %s; refusing it", e.Got, e.Want)
}

// ErrTooLarge is wrapped by the error of an answer larger than its bound.
var ErrTooLarge = errors.New("answer too large")

func statusMessage(code int) string {
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "HTTP status " + fmt.Sprint(code)
}
