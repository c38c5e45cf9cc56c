package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/hotpatch/hotpatch/patch"
)

// Options tune Apply.
type Options struct {
	// Trusted are the keys a patch must be signed by.
	Trusted []patch.PublicKey
	// Timeout bounds how long Apply waits for threads to leave the
	// functions being replaced (default 5s).
	Timeout time.Duration
	// Digest is the SHA-256 of the patch file, recorded in the process.
	Digest string
	// Waiting, if set, is called once per Apply when a thread is found
	// inside a function being replaced and Apply starts waiting (up to
	// Timeout) for it to leave: for a progress line. It is called while
	// the process's threads are stopped, so it must return at once.
	Waiting func(function string, tid int)
	// AllowUserContexts applies to a process that switches user-level
	// contexts (makecontext/swapcontext coroutines, a coroutine library),
	// which Apply otherwise refuses with a *UserContextError: the user
	// states that no function the patch replaces can be suspended on a
	// coroutine's stack, which the engine cannot see.
	AllowUserContexts bool
}

// Result reports one successful apply or revert.
type Result struct {
	PID    int
	Base   uint64        // where the patch is mapped
	Paused time.Duration // how long all threads were stopped, last stop
	// Functions is the number of functions switched: redirects written by
	// an apply, redirects taken out by a revert (see "Counting functions"
	// in docs/engine.md).
	Functions int
	// WasLost is set when the process carried the patch in state
	// StateLost (its redirects gone: the library was unloaded or loaded
	// again): Apply cleaned the stale mapping and applied it again; Revert
	// cleaned it up without writing into code that is no longer the
	// patch's.
	WasLost bool
	// KeptMapped is set by Revert in a process that switches user-level
	// contexts: the patch's code stays mapped (read-only, executable,
	// a few KB) until the process exits, since a coroutine suspended in
	// it may still return into it.
	KeptMapped bool
}

// BuildIDMismatchError reports a process that does not map the patch's
// target module.
type BuildIDMismatchError struct {
	PID  int
	Want []byte
	Name string // the target's file name
	Got  []byte // build-id of a module with that name, if any
}

func (e *BuildIDMismatchError) Error() string {
	if e.Got != nil {
		return fmt.Sprintf("process %d maps %s with build-id %x, but the patch is for build-id %x", e.PID, e.Name, e.Got, e.Want)
	}
	return fmt.Sprintf("process %d does not map %s (build-id %x)", e.PID, e.Name, e.Want)
}

// MismatchError reports original code that is not what the patch expects.
type MismatchError struct {
	PID      int
	Function string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("process %d: the code of %s differs from what the patch was built against", e.PID, e.Function)
}

// BusyError reports a function that a thread kept executing until the
// timeout.
type BusyError struct {
	Function string
	TID      int
	// NeverReturns is set when the function is the outermost frame of its
	// thread (main's loop, a thread's start routine): it will never leave.
	NeverReturns bool
}

func (e *BusyError) Error() string {
	if e.NeverReturns {
		return fmt.Sprintf("%s is on the stack of thread %d and never returns (it is the outermost function of that thread); it cannot be live-patched", e.Function, e.TID)
	}
	return fmt.Sprintf("%s is running in thread %d; retry later or raise --timeout", e.Function, e.TID)
}

// ErrAlreadyApplied is returned when the same patch (id and version) is
// already applied to the process; nothing is changed.
var ErrAlreadyApplied = errors.New("patch is already applied")

// ErrNotApplied is returned by Revert for a patch the process does not carry.
var ErrNotApplied = errors.New("patch is not applied")

// Applied describes a patch applied to a process, read from the process.
type Applied struct {
	ID        string     `json:"id"`
	Version   uint32     `json:"version"`
	AppliedAt time.Time  `json:"applied_at"`
	Module    string     `json:"module"`
	Base      uint64     `json:"base"`
	Functions []FuncInfo `json:"functions"`
	// Replaced is the patch's function count: how many original
	// functions it replaces, each by a redirect at its entry (see
	// "Counting functions" in docs/engine.md).
	Replaced int `json:"replaced"`
	// State is StateApplied; StateLost when a redirect of the patch is no
	// longer in the code (the library it patched was unloaded, or unloaded
	// and loaded again: the fix is not in effect); or a transient state
	// that a crash left behind (StatePreparing, StateRedirecting,
	// StateReverting), which the next apply or revert completes or undoes.
	State string `json:"state"`
	// StartupOnly: the patch changes only start-up code
	// (patch.FlagStartupOnly); applied, it is not in effect in this
	// process, which needs a restart to run the fix.
	StartupOnly bool `json:"startup_only,omitempty"`
}

// Values of Applied.State.
const (
	// StateApplied: every redirect of the patch is in the code.
	StateApplied = "applied"
	// StateLost: the patch mapping is there but a redirect is not (its
	// module was unloaded, or reloaded with its original code, at the same
	// address or another): the fix is not in effect. Apply cleans it up
	// and applies the patch again; Revert cleans it up.
	StateLost = "lost"
	// StatePreparing: mapped, no redirect written yet (a crash left it).
	StatePreparing = "preparing"
	// StateRedirecting: redirects being written (a crash or an error left
	// it); the next apply or revert reverts it.
	StateRedirecting = "redirecting"
	// StateReverting: redirects being taken out; the next apply or revert
	// finishes.
	StateReverting = "reverting"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Perms      string // "r-xp"
	Offset     uint64
	Dev        string
	Inode      uint64
	Path       string // file path, "[heap]", "[anon:name]", "" for anonymous
}

// Size returns the length of the mapping in bytes.
func (m Mapping) Size() uint64 { return m.End - m.Start }

// Module is an ELF file mapped into a process.
type Module struct {
	Path    string // as /proc/PID/maps shows it
	BuildID []byte
	// Bias is what is added to a link-time address to get the run-time
	// address (0 for fixed-address executables).
	Bias uint64
	// Start and End cover every mapping of the file.
	Start, End uint64
	// Deleted is set when the file on disk was replaced or removed since
	// the process mapped it (a newer package was installed).
	Deleted bool
}

// SymbolError reports an external symbol no module of the process defines.
type SymbolError struct {
	Symbol, Version string
}

func (e *SymbolError) Error() string {
	if e.Version != "" {
		return fmt.Sprintf("symbol %s@%s is not defined by any module of the process", e.Symbol, e.Version)
	}
	return fmt.Sprintf("symbol %s is not defined by any module of the process", e.Symbol)
}

// SeccompError reports a process that runs under a seccomp filter: the
// engine's remote system calls (mmap, memfd_create, mprotect) might be
// forbidden, and a filter whose action is to kill would kill the process,
// so it refuses before making any.
type SeccompError struct {
	PID  int
	Mode int // 1 strict, 2 filter
}

func (e *SeccompError) Error() string {
	return fmt.Sprintf("process %d runs under a seccomp %s; hotpatch cannot make the system calls it needs without risking the process, so it refuses (restart the service to pick up the fix)",
		e.PID, map[int]string{1: "strict mode", 2: "filter"}[e.Mode])
}

// UserContextError reports a process that switches user-level contexts:
// functions suspended on its coroutines' stacks are invisible to the
// consistency check, so Apply refuses it unless told otherwise
// (Options.AllowUserContexts).
type UserContextError struct {
	PID    int
	Module string // the module that shows it
	Reason string // "uses swapcontext", "is a coroutine library"
}

func (e *UserContextError) Error() string {
	return fmt.Sprintf("process %d switches user-level contexts (%s %s): a function suspended on a coroutine's stack is invisible to hotpatch's check, so it refuses; if no replaced function can be suspended on such a stack, apply with --allow-user-contexts",
		e.PID, e.Module, e.Reason)
}

// RecordFormatError reports a patch record written by a newer hotpatch,
// in a format this one does not know: it leaves the patch alone.
type RecordFormatError struct {
	PID    int
	Base   uint64
	Format uint32
}

func (e *RecordFormatError) Error() string {
	return fmt.Sprintf("process %d: the patch at %#x was written by a newer hotpatch (record format %d; this one reads up to %d); upgrade hotpatch to manage it", e.PID, e.Base, e.Format, recordFormat)
}

// returnStubSize is the room at the end of a patch's text for the stub
// that catches a busy thread's return (see catchReturn).
const returnStubSize = 32

// Hijack is a return address redirected to the return stub, as recorded in
// the patch mapping while the engine waits for a thread to leave.
type Hijack struct {
	TID  int    `json:"tid"`
	Slot uint64 `json:"slot"` // where on the stack the return address is
	Ret  uint64 `json:"ret"`  // the real return address
	Stub uint64 `json:"stub"`
}
