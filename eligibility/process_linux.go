//go:build linux

package eligibility

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoProcess is wrapped when the process does not exist.
var ErrNoProcess = errors.New("no such process")

// procStatus is the part of /proc/PID/status the checks read.
type procStatus struct {
	name       string
	uid        int
	tracer     int // TracerPid: the tracing thread
	tgid       int
	seccomp    int // 0 none, 1 strict, 2 filter
	shstk      bool
	capEff     uint64
	hasSeccomp bool
}

func readStatus(pid string) (*procStatus, error) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st := &procStatus{uid: -1}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Name":
			st.name = v
		case "Uid":
			if f := strings.Fields(v); len(f) > 1 {
				st.uid, _ = strconv.Atoi(f[1]) // effective
			}
		case "TracerPid":
			st.tracer, _ = strconv.Atoi(v)
		case "Tgid":
			st.tgid, _ = strconv.Atoi(v)
		case "Seccomp":
			st.seccomp, _ = strconv.Atoi(v)
			st.hasSeccomp = true
		case "x86_Thread_features":
			st.shstk = strings.Contains(v, "shstk")
		case "CapEff":
			st.capEff, _ = strconv.ParseUint(v, 16, 64)
		}
	}
	return st, sc.Err()
}

// Process checks a running process: its executable (as Binary does, read
// from the process's own mapping, so a file replaced on disk does not
// mislead), and what at run time would stop the engine: a tracer, a
// seccomp filter, shadow stacks, and whether the caller may attach.
func Process(pid int) (*Report, error) {
	return new(Checker).Process(pid)
}

// Process is the package's Process, with the executable's findings
// remembered.
func (c *Checker) Process(pid int) (*Report, error) {
	p := strconv.Itoa(pid)
	st, err := readStatus(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("eligibility: process %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("eligibility: process %d: %w", pid, err)
	}
	exe, _ := os.Readlink("/proc/" + p + "/exe")
	if exe == "" {
		exe = st.name
	}
	r := &Report{Target: fmt.Sprintf("pid %d (%s)", pid, exe)}
	self, _ := readStatus("self")
	attach := accessFindings(r, pid, st, self)
	if attach {
		r.Findings = append(r.Findings, c.executable("/proc/"+p+"/exe")...)
	}
	if st.tracer != 0 {
		// TracerPid names the tracing thread; name its process.
		tracer := st.tracer
		if ts, err := readStatus(strconv.Itoa(st.tracer)); err == nil && ts.tgid > 0 {
			tracer = ts.tgid
		}
		r.add("tracer", Block, fmt.Sprintf("already traced by pid %d (a debugger or another tool): a process has one tracer at a time", tracer), "detach the tracer, then apply")
	}
	switch {
	case !st.hasSeccomp:
	case st.seccomp == 1:
		r.add("seccomp", Block, "in seccomp strict mode: only read, write, exit and sigreturn are allowed, and the engine's remote mmap/memfd_create/mprotect would kill it", "")
	case st.seccomp == 2:
		r.add("seccomp", Block, "runs under a seccomp filter: the engine refuses it, since the filter might forbid the system calls it makes in the process (mmap, memfd_create, mprotect) or kill the process for them",
			"restart the service to pick up the fix (hotpatchd's fallback command can do it in a maintenance window)")
	default:
		r.add("seccomp", OK, "no seccomp filter", "")
	}
	if st.shstk {
		r.add("cet", Warn, "runs with CET shadow stacks enabled by the kernel: patching such a process is untested", "")
	}
	return r.finish(), nil
}

// accessFindings says whether the caller (self) may attach to the process
// and open what the engine opens; it returns true when it may.
func accessFindings(r *Report, pid int, st, self *procStatus) bool {
	if self == nil {
		return true
	}
	caps := self.capEff
	has := func(c int) bool { return caps&(1<<uint(c)) != 0 }
	scope := ptraceScope()
	ok := true
	switch {
	case scope == 3:
		r.add("ptrace-scope", Block, "kernel.yama.ptrace_scope is 3: no process may be attached to until reboot", "boot with ptrace_scope below 3")
		ok = false
	case !has(unix.CAP_SYS_PTRACE) && (scope >= 1 || st.uid != self.uid):
		why := "it belongs to another user"
		if scope >= 1 {
			why = fmt.Sprintf("kernel.yama.ptrace_scope is %d", scope)
		}
		r.add("ptrace", Block, fmt.Sprintf("this user may not attach to it without CAP_SYS_PTRACE (%s)", why), "run as root (sudo), as hotpatchd does")
		ok = false
	default:
		r.add("ptrace", OK, "may attach", "")
	}
	if !has(unix.CAP_CHECKPOINT_RESTORE) && !has(unix.CAP_SYS_ADMIN) {
		r.add("map-files", Block, "cannot open /proc/PID/map_files: needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN)", "run as root, or add CAP_CHECKPOINT_RESTORE")
		ok = false
	}
	if st.uid != self.uid && !has(unix.CAP_DAC_OVERRIDE) {
		r.add("mem", Block, fmt.Sprintf("/proc/%d/mem belongs to uid %d: opening it needs CAP_DAC_OVERRIDE", pid, st.uid), "run as root, or add CAP_DAC_OVERRIDE")
		ok = false
	}
	return ok
}

// ptraceScope returns kernel.yama.ptrace_scope, 0 without Yama.
func ptraceScope() int {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// executable returns the findings about a running executable. What
// hotpatch build needs from an original (symbols, kept relocations) does
// not block a running copy: a patch for it is built from a rebuild that
// has them (the stock-binary path), so those findings are warnings here.
func (c *Checker) executable(path string) []Finding {
	var key exeKey
	var st unix.Stat_t
	if unix.Stat(path, &st) == nil {
		key = exeKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}
		if f, ok := c.bins[key]; ok {
			return f
		}
	}
	r := &Report{}
	f, err := elf.Open(path)
	if err != nil {
		r.add("executable", Block, fmt.Sprintf("cannot read the executable: %v", err), "")
		return r.Findings
	}
	binaryFindings(r, f, path)
	f.Close()
	for i, x := range r.Findings {
		if x.Status == Block && (x.Check == "symtab" || x.Check == "relocations") {
			r.Findings[i].Status = Warn
			r.Findings[i].Message += "; a patch for this program must be built from a rebuild that keeps them"
		}
	}
	if key != (exeKey{}) {
		if c.bins == nil || len(c.bins) > 4096 {
			c.bins = map[exeKey][]Finding{}
		}
		c.bins[key] = r.Findings
	}
	return r.Findings
}

// CanReadOthers reports whether the calling process may read the memory
// and mappings of other users' processes (CAP_SYS_PTRACE in its effective
// set), as hotpatch status --all must to see every patched process.
func CanReadOthers() bool {
	st, err := readStatus("self")
	return err == nil && st.capEff&(1<<unix.CAP_SYS_PTRACE) != 0
}
