// Package kmsg reads the crash reports that the kernel writes to its log
// (/dev/kmsg): which process faulted, how (segfault, general protection
// fault, int3, invalid opcode, …), at which instruction and, for a
// segfault, at which address. The process connector (package procevents)
// tells the agent that a process died of a signal; this package tells it
// where.
//
// # Place in the flow
//
//	kernel: fault in user mode ──/dev/kmsg──▶ Reader.Next ──▶ agent: crash event (PID, kind, IP, address)
//	                                                           ▲
//	procevents: Exit killed by SIGSEGV ────────────────────────┘ matched by PID
//
// ParseLine decodes one /dev/kmsg record and needs nothing but the string;
// Open and Next are Linux code.
//
// # The records
//
// A /dev/kmsg record is "PRIO,SEQ,USEC,FLAGS[,…];MESSAGE", then optional
// " KEY=VALUE" lines; the kernel escapes bytes below 0x20, from 0x7f, and
// the backslash as \xHH. The x86 kernel logs an unhandled fatal fault of a
// user process (when debug.exception-trace is 1, its default, and subject
// to the printk rate limit of kernel.printk_ratelimit and
// kernel.printk_ratelimit_burst) as one of:
//
//	COMM[PID]: segfault at ADDR ip IP sp SP error CODE[ in FILE[OFF,BASE+SIZE]][ likely on CPU N (core C, socket S)]
//	traps: COMM[PID] KIND ip:IP sp:SP error:CODE[ in FILE[…]]
//	COMM[PID] bad frame in rt_sigreturn frame:P ip:IP sp:SP orax:AX[ in …]
//
// (arch/x86/mm/fault.c show_signal_msg, arch/x86/kernel/traps.c
// show_signal, arch/x86/kernel/signal.c signal_fault). KIND is "trap "
// followed by the trap's name ("trap int3", "trap invalid opcode", "trap
// divide error", …), or "general protection fault", or "control
// protection". The kernel follows a segfault with a "Code: …" record, which
// is skipped. SIGBUS, SIGABRT and the like are not logged at all: for those
// the Exit event's signal is all there is.
//
// # Trust
//
// COMM is chosen by the process (prctl PR_SET_NAME) and FILE by whoever
// named the file, so a hostile process can put "[1]: segfault at …" in its
// name. ParseLine does not search for the pattern: COMM is at most 15 bytes
// (TASK_COMM_LEN 16), and ParseLine takes the first "[" within them after
// which the whole fixed part of a format matches, with nothing after it but
// a space or the end. The kernel's own "[" right after COMM can be part of
// no other match, so a forged one inside COMM cannot win, and FILE comes
// after the real match. Only facility 0 (the kernel) counts: records
// written to /dev/kmsg from user space carry another facility.
//
// PIDs are those of the initial PID namespace, like the process
// connector's. Time is the record's timestamp: local_clock, which is close
// to but not the CLOCK_MONOTONIC of procevents; match by PID.
package kmsg
