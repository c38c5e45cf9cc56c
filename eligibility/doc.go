// Package eligibility answers "can this be hotpatched, and if not, why?"
// for a binary on disk, a running process and the host, before anyone
// builds or applies a patch. It only reads: ELF files (debug/elf), /proc
// and the caller's own capabilities; it never attaches to a process.
//
//	hotpatch check FILE ──▶ Binary(path)  ─┐
//	hotpatch check --pid ─▶ Process(pid) ──┼─▶ Report{Findings: ok / warn / block, why, what to do}
//	hotpatch check --host ▶ Host()  ───────┘          │
//	hotpatchd inventory ──▶ Host(), Process(pid) ─────┴─▶ hotpatch-server dashboard (host page)
//
// A Finding with Status Block means a patch cannot be built or applied as
// things are (a stripped binary, a process traced by a debugger, no
// CAP_SYS_PTRACE, a seccomp filter, which the engine refuses); Warn means
// it may work but something needs attention (user-level context
// switching, a build without -ffunction-sections); OK findings say what was checked. Each finding
// names its check with a short stable word (Check) so that programs can
// match on it; Message says what was found and Fix what to do.
//
// What it cannot tell: whether a given function ever returns (that
// depends on the patch; the engine reports it at apply time), and whether
// two builds used the same flags (hotpatch build compares them).
package eligibility
