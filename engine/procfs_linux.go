//go:build linux && amd64

package engine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// readMaps parses /proc/PID/maps.
func readMaps(pid int) ([]Mapping, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, processError(pid, err)
	}
	return parseMaps(data)
}

func parseMaps(data []byte) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// start-end perms offset dev inode path
		f := strings.Fields(line)
		if len(f) < 5 {
			return nil, fmt.Errorf("malformed maps line %q", line)
		}
		se := strings.SplitN(f[0], "-", 2)
		if len(se) != 2 {
			return nil, fmt.Errorf("malformed maps range %q", f[0])
		}
		var m Mapping
		var err error
		if m.Start, err = strconv.ParseUint(se[0], 16, 64); err != nil {
			return nil, fmt.Errorf("malformed maps range %q", f[0])
		}
		if m.End, err = strconv.ParseUint(se[1], 16, 64); err != nil {
			return nil, fmt.Errorf("malformed maps range %q", f[0])
		}
		m.Perms = f[1]
		if m.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
			return nil, fmt.Errorf("malformed maps offset %q", f[2])
		}
		m.Dev = f[3]
		if m.Inode, err = strconv.ParseUint(f[4], 10, 64); err != nil {
			return nil, fmt.Errorf("malformed maps inode %q", f[4])
		}
		if len(f) > 5 {
			// The path is the rest of the line after the inode, and may
			// hold spaces.
			idx := strings.Index(line, f[4]) + len(f[4])
			m.Path = strings.TrimSpace(line[idx:])
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// threads lists the thread ids of a process.
func threads(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, processError(pid, err)
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out, nil
}

// seccompMode returns the Seccomp field of /proc/PID/status: 0 none,
// 1 strict, 2 filter.
func seccompMode(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, processError(pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, nil
}

// exitedDuring turns the error of an apply or revert whose process ended
// meanwhile (each step then fails its own way) into one plain message.
// existed tells whether the process was there when the work began.
func exitedDuring(pid int, existed bool, what string, err error) error {
	if err == nil || !existed {
		return err
	}
	// A process being killed fails ptrace (ESRCH, or EPERM for a thread
	// already exiting) and writes to its memory (nothing written: EOF) a
	// moment before /proc shows it dead, and its main thread is a zombie a
	// moment before the others: give it that moment before telling a
	// process that exited from one whose main thread alone did
	// (pthread_exit in main).
	// A process that is exiting also loses its mappings one by one, so it
	// can seem not to map the target any more.
	var mismatch *BuildIDMismatchError
	dying := errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EPERM) || errors.Is(err, ErrNoProcess) || errors.Is(err, errThreadGone) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.As(err, &mismatch)
	for i := 0; alive(pid); i++ {
		gone := leaderGone(pid)
		if i == 100 && gone {
			return fmt.Errorf("process %d: %w", pid, ErrMainThreadExited)
		}
		if i == 100 || !dying && !gone {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("process %d exited during the %s: %w", pid, what, ErrNoProcess)
}

// alive reports whether process pid exists and some thread of it is not a
// zombie (a main thread that called pthread_exit is one while the others
// run on).
func alive(pid int) bool {
	tids, err := threads(pid)
	if err != nil {
		return false
	}
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X' {
			return true
		}
	}
	return false
}

// leaderGone reports a process whose main thread is a zombie while other
// threads live.
func leaderGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) || b[i+2] != 'Z' {
		return false
	}
	tids, _ := threads(pid)
	return len(tids) > 1
}
