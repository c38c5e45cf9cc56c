package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// exhaustFDs lowers the soft RLIMIT_NOFILE of process pid (an agent the
// test started) to its lowest free descriptor number, so that every
// open(2) in it fails with EMFILE, as on a host where the agent ran out
// of file descriptors; the descriptors it has keep working. It returns a
// function that restores the limit (also run at cleanup).
func exhaustFDs(t *testing.T, pid int) (restore func()) {
	t.Helper()
	// The lowest number free in every sample: a descriptor that was open
	// only for a moment (a read of /proc) is not counted as taken.
	low := uint64(1 << 20)
	for range 5 {
		ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
		if err != nil {
			t.Fatal(err)
		}
		open := map[uint64]bool{}
		for _, e := range ents {
			n, _ := strconv.ParseUint(e.Name(), 10, 64)
			open[n] = true
		}
		n := uint64(0)
		for open[n] {
			n++
		}
		low = min(low, n)
		time.Sleep(5 * time.Millisecond)
	}
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	limited := unix.Rlimit{Cur: low, Max: old.Max}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &limited, nil); err != nil {
		t.Fatal(err)
	}
	done := false
	restore = func() {
		if !done {
			done = true
			unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil)
		}
	}
	t.Cleanup(restore)
	return restore
}

// TestAgentProcUnreadableRollback: a patched process crashes while the
// agent cannot open anything (EMFILE), so it cannot read /proc to find the
// other processes that carry the bad patch. It says so, keeps the
// rollback pending, and finishes it once /proc can be read again (it used
// to count "0 other processes" and leave the bad patch in them).
func TestAgentProcUnreadableRollback(t *testing.T) {
	h := newHost(t)
	orig, fixed := crashy(t)
	cfg, _ := withPatch(t, h, orig, fixed, "crashy-fix")
	a, pidA := h.start(t, orig)
	b, pidB := h.start(t, orig)
	ag := startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pidA))
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied", is("applied", pidB))

	restore := exhaustFDs(t, ag.cmd.Process.Pid)
	waitEvent(t, cfg.StateDir, 30*time.Second, "proc_unreadable (rescan)", func(e Event) bool {
		return e.Type == "proc_unreadable" && strings.HasPrefix(e.Message, "rescan")
	})
	a.Probe("boom")
	waitEvent(t, cfg.StateDir, 30*time.Second, "crash", is("crash", pidA))
	rb := waitEvent(t, cfg.StateDir, 30*time.Second, "rolled_back", is("rolled_back", 0))
	if !strings.Contains(rb.Message, "/proc") {
		t.Errorf("rolled_back says %q; want it to say the revert from the others waits for /proc", rb.Message)
	}
	restore()
	waitEvent(t, cfg.StateDir, 30*time.Second, "reverted from the other process", is("reverted", pidB))
	if got, _ := b.Probe("hello"); got != "orig hello" {
		t.Errorf("B answered %q after the rollback; want the original", got)
	}
}

// TestAgentEnrolledProcUnreadable: while the agent cannot read /proc
// (EMFILE), a sync answer that needs to know what runs keeps every file of
// STATE/server/ (it used to read "nothing runs" and delete them, and the
// agent then reverted the fix), and the agent says why; once it can read
// again the patch is still in force and reaches a new process.
func TestAgentEnrolledProcUnreadable(t *testing.T) {
	h := newHost(t)
	orig, fixed := boundsCheck(t)
	corig, cfixed := crashy(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	_, data := signed(t, orig, fixed, "bounds-fix", key)
	_, other := signed(t, corig, cfixed, "crashy-fix", key) // its target does not run
	f := newFleet(t, dir, pub)
	proc, pid := h.start(t, orig)
	cfg := f.enrolledConfig(dir, h, pub, map[string]string{"ring": "canary"})
	ag := startAgent(t, cfg)
	waitEvent(t, cfg.StateDir, 30*time.Second, "enrolled", is("enrolled", 0))
	f.rollout(t, data)
	waitEvent(t, cfg.StateDir, 60*time.Second, "applied from the server", is("applied", pid))
	files, _ := filepath.Glob(filepath.Join(cfg.StateDir, serverDirName, "*.hpatch"))
	if len(files) != 1 {
		t.Fatalf("server patch files: %v", files)
	}

	restore := exhaustFDs(t, ag.cmd.Process.Pid)
	f.rollout(t, other)
	waitEvent(t, cfg.StateDir, 60*time.Second, "proc_unreadable (server patches)", func(e Event) bool {
		return e.Type == "proc_unreadable" && strings.HasPrefix(e.Message, "server patches")
	})
	for _, file := range files {
		if _, err := os.Stat(file); err != nil {
			t.Errorf("a server patch file went while /proc could not be read: %v", err)
		}
	}
	restore()
	_, pid2 := h.start(t, orig)
	waitEvent(t, cfg.StateDir, 30*time.Second, "applied to a new process", is("applied", pid2))
	if !answersFixed(t, proc) {
		t.Errorf("the first process no longer answers as fixed")
	}
	if e, ok := findEvent(cfg.StateDir, func(e Event) bool { return e.Type == "patch_removed" || e.Type == "reverted" }); ok {
		t.Errorf("the fix was dropped: %s", e)
	}
}
