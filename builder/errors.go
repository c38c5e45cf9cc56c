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
