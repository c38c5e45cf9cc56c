//go:build !linux

package eligibility

import "fmt"

// Process needs Linux.
func Process(pid int) (*Report, error) {
	return nil, fmt.Errorf("eligibility: process %d: %w", pid, ErrNotSupported)
}

// Host reports that hotpatch works on Linux only.
func Host() *Report {
	r := &Report{Target: "host"}
	r.add("os", Block, ErrNotSupported.Error(), "")
	return r.finish()
}
