package unwind

import (
	"errors"
	"fmt"
)

// ErrNotSupported is wrapped by the error of Load for ELF files that are not
// 64-bit little-endian x86-64.
var ErrNotSupported = errors.New("unwind: not supported")

// ErrTruncated is returned by Unwind, with the frames found, when the stack
// goes on beyond maxFrames. The frames are right but the stack is not
// complete: a caller that must see every frame has to retry with a larger
// limit or treat the stack as unknown.
var ErrTruncated = errors.New("unwind: stack has more frames than the limit; raise maxFrames")

// FormatError reports malformed or unsupported call frame information.
type FormatError struct {
	Section string // ".eh_frame", ".eh_frame_hdr" or ".debug_frame"
	Offset  int64  // byte offset in the section
	Reason  string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("unwind: bad call frame information in %s at offset %#x: %s", e.Section, e.Offset, e.Reason)
}

// NoCFIError is returned by Unwind, with the frames found so far, when no
// call frame information covers PC (the last frame) and the frame-pointer
// chain does not look usable either. The stack above PC is unknown.
type NoCFIError struct {
	PC uint64
}

func (e *NoCFIError) Error() string {
	return fmt.Sprintf("unwind: no call frame information for pc %#x and no usable frame pointer; "+
		"the rest of the stack is unknown (is the module that maps it in the module list?)", e.PC)
}

// FrameError is returned by Unwind, with the frames found so far, when the
// caller of frame Index could not be recovered: a register the rules need is
// unknown, the target's memory cannot be read, the rules are malformed, or
// the stack does not move up.
type FrameError struct {
	Index int    // the frame being unwound; frames[Index] is the last one returned
	PC    uint64 // its PC
	Err   error
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("unwind: cannot find the caller of frame %d (pc %#x): %v", e.Index, e.PC, e.Err)
}

func (e *FrameError) Unwrap() error { return e.Err }
