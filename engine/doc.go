// Package engine applies a verified patch to a running Linux x86-64
// process and reverts it, with ptrace, without restarting it: same pid,
// same connections, same memory. It sits at the end of the flow
// (builder → signed patch file → server → agent → engine → process) and is
// used by the hotpatch CLI (apply, revert, status) and by the agent
// hotpatchd. docs/engine.md holds the full design notes and decisions.
//
// # Apply
//
// [Apply] checks the patch's signature, finds the target module in the
// process by build-id (read through /proc/PID/map_files), checks the
// SHA-256 of every function it replaces, lays the new code out at a free
// address within ±2 GiB of the module and resolves its relocations, maps it
// (a memfd named hotpatch:ID, made with system calls run in the process
// through a trampoline in a module's unused code slack), then stops every
// thread and, once none executes or has a return address in a replaced
// function, writes a jump at each function's entry and lets the process
// go. A thread inside such a function is caught the moment it returns (its
// return address pointed at a small stub), up to Options.Timeout; a
// function that never returns is refused at once ([BusyError]).
//
// # State lives in the process
//
// Each patch mapping starts with a header and a JSON record (versioned:
// every format ever written stays readable) listing every redirect and the
// bytes it replaced, so any hotpatch instance can read what a process
// carries ([Status]) and undo it ([Revert]). A state word written as one
// store (preparing, redirecting, applied, reverting) makes every step
// crash-safe: a hotpatch killed at any moment, or an error it cannot undo
// at once ([HalfDoneError]), leaves a recorded state that the next apply
// or revert finishes or undoes. The engine never writes a breakpoint,
// never single-steps and never sets debug registers, so the kernel's
// detach on its death always leaves the target running.
//
// # Applied means in effect
//
// Every reader of the records checks each redirect in the code itself: a
// patch whose library was unloaded, or loaded again with its original code,
// is [StateLost], never "applied"; Apply cleans it up and applies it again,
// Revert cleans it up. A patch's function count is the number of functions
// it replaces by a redirect (Result.Functions, Applied.Replaced).
//
// # Refusals
//
// What the engine cannot do safely it refuses by name and leaves the
// process byte for byte as it was: another build of the module
// ([BuildIDMismatchError]), changed code ([MismatchError]), a seccomp
// filter ([SeccompError]), user-level context switching whose coroutine
// stacks it cannot check ([UserContextError], unless
// Options.AllowUserContexts), missing privileges ([ErrPermission]: ptrace,
// and CAP_CHECKPOINT_RESTORE for /proc/PID/map_files).
//
// On other platforms every entry point returns [ErrNotSupported].
package engine
