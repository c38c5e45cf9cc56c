// Package procevents reports, within milliseconds, that a process forked,
// exec'd or exited, from the Linux process connector (netlink protocol
// NETLINK_CONNECTOR, multicast group CN_IDX_PROC).
//
// # Place in the flow
//
//	kernel: fork, exec, exit ──netlink──▶ Listener.Read ──▶ agent
//	                                                          ├─ Exec: a new program to patch
//	                                                          └─ Exit by a signal: a crash (details from package kmsg)
//
// The agent (hotpatchd) calls Listen once and Read in a loop. Between rescans
// of /proc, Exec events tell it which processes to look at and Exit events
// whether a patched process died of a signal. Close, from any goroutine,
// ends a pending Read.
//
// Parsing is separate from the socket: datagrams are decoded by a parser
// that checks every bound and never panics (FuzzParse), runs on every
// platform and needs no privilege. Only the Listener is Linux code.
//
// # What the kernel reports
//
// Every thread counts: a thread's creation is a Fork event whose PID (the
// thread id) differs from its TGID (the process id), and every thread's end
// is an Exit event. The process itself is the event with PID == TGID.
// ExitCode is the wait status (as in waitpid): Signal and ExitStatus decode
// it. Time is the kernel's CLOCK_MONOTONIC (ktime_get_ns) at the event;
// package kmsg stamps its records with another clock (local_clock), so match
// an Exit event and a kmsg fault by PID, not by time.
//
// # PID namespaces
//
// PIDs are those of the initial PID namespace, whatever namespace the
// process lives in: a child of `unshare --pid --fork` that sees itself as
// pid 1 (getpid() == 1) is reported with its host PID (say 4242), and so
// are its fork, exec and exit. To tell which namespace a process belongs
// to, read /proc/PID/ns/pid (the agent filters on that).
//
// The kernel serves only listeners in the initial PID and user namespaces:
// depending on the kernel, it silently ignores a subscription from anywhere
// else, or refuses it (EPERM). Listen therefore waits for the kernel's
// acknowledgement (which is queued before the subscribing send returns)
// and fails with a clear error when none comes or the kernel refuses,
// instead of returning a listener that would never see an event. The
// connector also exists in the initial network namespace only; elsewhere
// Listen fails too.
//
// # Privileges and losses
//
// Subscribing needs CAP_NET_ADMIN on older kernels (run hotpatchd as root);
// Listen says so when the kernel refuses. Events are multicast datagrams:
// when the agent does not keep up, the kernel drops them, and goes on
// dropping every event until the reader has emptied the queue. Read
// therefore drains the queue before it reports the loss with an error
// wrapping ErrOverrun; a rescan of /proc started after that error sees
// every process the lost events were about. Listen asks for an 8 MiB
// receive buffer (SO_RCVBUFFORCE, else SO_RCVBUF up to net.core.rmem_max)
// so that bursts of process creation fit.
//
// Only the kernel's datagrams count: one from another socket (any local
// process may send to ours) is dropped unread.
package procevents
