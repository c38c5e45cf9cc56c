//go:build !(linux && amd64)

package engine

import (
	"os/exec"
	"time"

	"github.com/hotpatch/hotpatch/patch"
)

// Apply is only supported on Linux x86-64.
func Apply(pid int, p *patch.Patch, opts Options) (*Result, error) { return nil, ErrNotSupported }

// Revert is only supported on Linux x86-64.
func Revert(pid int, id string, timeout time.Duration) (*Result, error) { return nil, ErrNotSupported }

// Status is only supported on Linux x86-64.
func Status(pid int) ([]Applied, error) { return nil, ErrNotSupported }

// FindProcesses is only supported on Linux x86-64.
func FindProcesses(buildID []byte, id string) ([]int, error) { return nil, ErrNotSupported }

// BuildIDCache remembers the build-ids of mapped files.
type BuildIDCache struct{}

// ProcessModules is only implemented on Linux x86-64.
func ProcessModules(pid int, c *BuildIDCache) ([]Module, error) { return nil, ErrNotSupported }

// StartResult is the outcome of one patch in Start.
type StartResult struct {
	Patch  *patch.Patch
	Result *Result
	Err    error
}

// Start is only supported on Linux x86-64.
func Start(cmd *exec.Cmd, patches []*patch.Patch, opts Options) ([]StartResult, error) {
	return nil, ErrNotSupported
}
