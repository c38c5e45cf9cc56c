//go:build linux

package eligibility

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/kmsg"
	"github.com/hotpatch/hotpatch/internal/procevents"
)

// capability is one capability the engine or the agent uses, and what for.
type capability struct {
	bit    int
	name   string
	use    string
	status Status // without it
}

var capabilities = []capability{
	{unix.CAP_SYS_PTRACE, "CAP_SYS_PTRACE", "attach to processes, read and write their memory", Block},
	{unix.CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE", "open /proc/PID/map_files to read the modules a process maps", Block},
	{unix.CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE", "open /proc/PID/mem of processes of other users", Block},
	{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN", "the process connector's large receive buffer (agent: new processes patched at exec)", Warn},
	{unix.CAP_SYSLOG, "CAP_SYSLOG", "crash reports from /dev/kmsg (agent)", Warn},
	{unix.CAP_SYS_NICE, "CAP_SYS_NICE", "real-time priority during the pause", Warn},
	{unix.CAP_KILL, "CAP_KILL", "health probes that signal processes of other users (agent)", Warn},
}

// Host checks what the engine and the agent use on this host, as the
// calling process: the architecture, the caller's capabilities, the Yama
// ptrace scope, /proc/PID/map_files, memfd_create, the kernel's process
// connector and its log.
func Host() *Report {
	host, _ := os.Hostname()
	r := &Report{Target: "host " + host}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		r.add("kernel", OK, "Linux "+unix.ByteSliceToString(uts.Release[:]), "")
	}
	if runtime.GOARCH != "amd64" {
		r.add("arch", Block, runtime.GOARCH+": the engine patches x86-64 processes only", "")
	} else {
		r.add("arch", OK, "x86-64", "")
	}
	self, err := readStatus("self")
	if err != nil {
		r.add("capabilities", Block, fmt.Sprintf("cannot read /proc/self/status: %v", err), "")
		return r.finish()
	}
	sysAdmin := self.capEff&(1<<unix.CAP_SYS_ADMIN) != 0
	for _, c := range capabilities {
		switch {
		case self.capEff&(1<<uint(c.bit)) != 0:
			r.add("capabilities", OK, c.name+": "+c.use, "")
		case c.bit == unix.CAP_CHECKPOINT_RESTORE && sysAdmin:
			r.add("capabilities", OK, "CAP_SYS_ADMIN (in place of CAP_CHECKPOINT_RESTORE): "+c.use, "")
		default:
			r.add("capabilities", c.status, "missing "+c.name+": needed to "+c.use, "run as root; under systemd, see packaging/hotpatchd.service for the set")
		}
	}
	switch s := ptraceScope(); s {
	case 0:
		r.add("ptrace-scope", OK, "Yama ptrace_scope 0 (or no Yama)", "")
	case 1, 2:
		r.add("ptrace-scope", OK, fmt.Sprintf("Yama ptrace_scope %d: attaching needs CAP_SYS_PTRACE", s), "")
	default:
		r.add("ptrace-scope", Block, fmt.Sprintf("Yama ptrace_scope %d: no process can be attached to until reboot", s), "set kernel.yama.ptrace_scope below 3 at boot")
	}
	mapFilesFinding(r)
	if fd, err := unix.MemfdCreate("hotpatch-check", unix.MFD_CLOEXEC); err != nil {
		r.add("memfd", Block, fmt.Sprintf("memfd_create: %v: patch code is mapped from a memfd", err), "a kernel of 3.17 or later")
	} else {
		unix.Close(fd)
		r.add("memfd", OK, "memfd_create works", "")
	}
	if l, err := procevents.Listen(); err != nil {
		r.add("process-events", Warn, fmt.Sprintf("%v: the agent finds new processes at its rescans only", err), "run hotpatchd as root with CAP_NET_ADMIN on a kernel with CONFIG_PROC_EVENTS")
	} else {
		l.Close()
		r.add("process-events", OK, "the kernel's process connector answers", "")
	}
	if k, err := kmsg.Open(); err != nil {
		r.add("kmsg", Warn, fmt.Sprintf("%v: crash events will lack the faulting function", err), "")
	} else {
		k.Close()
		r.add("kmsg", OK, "/dev/kmsg readable", "")
	}
	return r.finish()
}

// mapFilesFinding opens one of this process's own /proc/self/map_files
// entries, as the engine does for a target's.
func mapFilesFinding(r *Report) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		r.add("map-files", Block, fmt.Sprintf("%v", err), "")
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], "/") {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(fields[0], "%x-%x", &start, &end); err != nil {
			continue
		}
		m, err := os.Open(fmt.Sprintf("/proc/self/map_files/%x-%x", start, end))
		if err != nil {
			r.add("map-files", Block, fmt.Sprintf("cannot open /proc/PID/map_files (%v): needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN", err), "run as root")
			return
		}
		m.Close()
		r.add("map-files", OK, "/proc/PID/map_files readable", "")
		return
	}
	r.add("map-files", Warn, "no file mapping of this process to try /proc/PID/map_files on", "")
}
