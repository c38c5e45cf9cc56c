package builder

import (
	"errors"
	"fmt"
)

// ErrNoChange is returned when the two builds differ in no function.
var ErrNoChange = errors.New("no function changed between the original and the fixed build")

// InputError reports a build that does not meet the input contract.
type InputError struct {
	Path   string
	Reason string
}

func (e *InputError) Error() string { return fmt.Sprintf("%s: %s", e.Path, e.Reason) }

// DataChangeError reports a change to existing data, which a live patch
// cannot make: the running process already holds that data and its state.
type DataChangeError struct {
	Object string // symbol name, with the source file for statics
	Reason string // e.g. "initial value changed"
}

func (e *DataChangeError) Error() string {
	return fmt.Sprintf("cannot live-patch a change to existing data %s: %s; keep the old definition and add a new object instead", e.Object, e.Reason)
}

// UnsupportedError reports code the builder cannot carry safely.
type UnsupportedError struct {
	Function string
	Reason   string
}

func (e *UnsupportedError) Error() string {
	if e.Function == "" {
		return "unsupported change: " + e.Reason
	}
	return fmt.Sprintf("unsupported change in %s: %s", e.Function, e.Reason)
}

// BuildsDifferError reports a pair that was not built the same way: code
// that a source fix does not touch changed (the C runtime linked into every
// program), or most of the program changed. Its message says so instead of
// a refusal about some function the fix never touched.
type BuildsDifferError struct {
	// Function is C runtime code that changed, if any.
	Function string
	// Changed of Total paired functions differ.
	Changed, Total int
}

func (e *BuildsDifferError) Error() string {
	if e.Function != "" {
		return fmt.Sprintf("the two builds differ in compiler flags or compiler: C runtime code (%s) changed between them, which a source fix does not do; build both with the same compiler and flags (e.g. both -O2)", e.Function)
	}
	return fmt.Sprintf("the two builds differ in compiler flags or compiler: %d of their %d functions differ, which a source fix rarely does; build both with the same compiler and flags (e.g. both -O2)", e.Changed, e.Total)
}
