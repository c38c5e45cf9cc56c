//go:build !linux

package eligibility

import "fmt"

// Process needs Linux.
func Process(pid int) (*Report, error) {
	return nil, fmt.Errorf("eligibility: process %d: %w", pid, ErrNotSupported)
}

// Process needs Linux.
func (c *Checker) Process(pid int) (*Report, error) { return Process(pid) }

// Host reports that hotpatch works on Linux only.
func Host() *Report {
	r := &Report{Target: "host"}
	r.add("os", Block, ErrNotSupported.Error(), "")
	return r.finish()
}

// CanReadOthers is false: process checks need Linux.
func CanReadOthers() bool { return false }
