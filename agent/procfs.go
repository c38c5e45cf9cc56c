package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hotpatch/hotpatch/engine"
)

// Reading /proc can fail for reasons that say nothing about which
// processes run: the agent out of file descriptors (EMFILE), the kernel
// out of memory, a /proc mounted oddly. An empty answer would then read as
// "nothing runs", and every step that acts on absence (forget a managed
// patch, delete the server's patch files, skip a rollback) would act on
// bad luck. The helpers here tell "gone" (ENOENT, ESRCH) from "could not
// read" (anything else), and the callers skip their destructive step on
// the latter, saying why (a proc_unreadable event).

// errProcUnreadable wraps a failed read of /proc.
var errProcUnreadable = errors.New("cannot read /proc")

func procError(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", errProcUnreadable, what, err)
}

// gone reports whether a read of /proc/PID/… failed because the process
// ended (the only failure that means "not running").
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) || errors.Is(err, engine.ErrNoProcess)
}

// exhausted reports an error that comes from a lack of resources (file
// descriptors, memory): it says nothing of the process read.
func exhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.EAGAIN)
}

// listPIDs lists the processes of /proc (without the agent itself). An
// error means the list is unknown, never that it is empty.
func listPIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, procError("listing processes", err)
	}
	self := os.Getpid()
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != self {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// carriers returns the processes in the agent's scope that map patch id
// (a memfd named hotpatch:ID), or every patch when id is "". Unlike
// engine.FindProcesses, a process whose maps cannot be read for another
// reason than its end is an error, not a process without the patch.
func (a *Agent) carriers(id string) ([]int, error) {
	pids, err := listPIDs()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, pid := range pids {
		if !a.inScope(pid) {
			continue
		}
		ok, err := mapsPatch(pid, id)
		if err != nil {
			if gone(err) {
				continue
			}
			return nil, procError("reading the maps of process "+strconv.Itoa(pid), err)
		}
		if ok {
			out = append(out, pid)
		}
	}
	return out, nil
}

// patchMappingPrefix is how the engine names a patch's memfd (hotpatch:ID).
const patchMappingPrefix = "/memfd:hotpatch:"

// mapsPatch reports whether pid maps patch id ("" for any patch).
func mapsPatch(pid int, id string) (bool, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return false, err
	}
	for _, r := range patchRanges(data) {
		if id == "" || r.id == id {
			return true, nil
		}
	}
	return false, nil
}

// patchRange is where one mapping of a patch lies in a process.
type patchRange struct {
	id         string
	start, end uint64
}

// patchRanges finds the patch mappings (memfd:hotpatch:ID) in the text of
// /proc/PID/maps.
func patchRanges(maps []byte) []patchRange {
	var out []patchRange
	sc := bufio.NewScanner(bytes.NewReader(maps))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, patchMappingPrefix)
		if i < 0 {
			continue
		}
		id := strings.TrimSuffix(line[i+len(patchMappingPrefix):], " (deleted)")
		lo, hi, ok := strings.Cut(strings.Fields(line)[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, patchRange{id: id, start: start, end: end})
	}
	return out
}

// procAlarm records failed reads of /proc as proc_unreadable events, once
// per step until that step reads /proc again (it is shared by the Run
// loop and the server link's goroutines).
type procAlarm struct {
	log  *eventLog
	mu   sync.Mutex
	down map[string]bool
}

func newProcAlarm(log *eventLog) *procAlarm {
	return &procAlarm{log: log, down: map[string]bool{}}
}

// failed records that step could not read /proc and what it skipped.
func (p *procAlarm) failed(step, skipped string, err error) {
	p.mu.Lock()
	first := !p.down[step]
	p.down[step] = true
	p.mu.Unlock()
	if first {
		p.log.add(Event{Type: "proc_unreadable", Error: err.Error(), Message: step + ": " + skipped})
	}
}

// ok records that step read /proc again.
func (p *procAlarm) ok(step string) {
	p.mu.Lock()
	delete(p.down, step)
	p.mu.Unlock()
}
