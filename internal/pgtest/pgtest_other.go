//go:build !linux

package pgtest

import (
	"errors"
	"testing"
)

// RequireEnv: see the Linux file.
const RequireEnv = "HOTPATCH_REQUIRE_POSTGRES"

var errNoPostgres = errors.New("the throwaway PostgreSQL runs on Linux only")

// URL skips the test: the throwaway server is Linux only.
func URL(t testing.TB) string {
	t.Helper()
	t.Skip(errNoPostgres)
	return ""
}

// NewDatabase reports that there is no throwaway server here.
func NewDatabase() (string, error) { return "", errNoPostgres }

// Stop does nothing.
func Stop() {}
