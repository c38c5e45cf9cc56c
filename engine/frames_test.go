package engine

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotpatch/hotpatch/internal/testutil"
)

// TestFramesFromCFI checks that the consistency check really unwinds with
// CFI (rather than falling back to the stack scan) on an -O2 program's
// threads, blocked in read() or spinning, and that every unwind reaches
// the program's own code.
func TestFramesFromCFI(t *testing.T) {
	p := stopme(t, 4)
	// The two reading workers in their read() and the spinners spinning,
	// not still starting (a loaded machine may take a while).
	spins := probeNumber(t, p, "spins")
	testutil.Eventually(t, time.Minute, func() bool {
		return blockedInRead(p.Pid()) == 3 && probeNumber(t, p, "spins") > spins
	}, func() string {
		return fmt.Sprintf("the workers never settled: %d threads in read()", blockedInRead(p.Pid()))
	})
	tg, err := openTarget(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	tg.cfi = tg.unwindModules()
	exe := tg.mods[0]
	w, err := stopWorld(p.Pid())
	if err != nil {
		t.Fatal(err)
	}
	defer w.release()
	exact := len(w.tids())
	for _, tid := range w.tids() {
		var regs unix.PtraceRegs
		if err := w.tr.do(func() error { regs, err = getRegs(tid); return err }); err != nil {
			t.Fatal(err)
		}
		pcs, ok := tg.frames(regs)
		if !ok {
			// Allowed for a worker caught mid-start; never for main.
			if tid == p.Pid() {
				t.Errorf("main thread: no exact unwind")
			} else {
				exact--
			}
			continue
		}
		// A worker may not have entered its start routine yet on a busy
		// machine; the main thread is surely in main, under fgets.
		inExe := false
		for _, f := range pcs {
			pc := f.LookupPC()
			inExe = inExe || (pc >= exe.Start && pc < exe.End)
		}
		if tid == p.Pid() && (!inExe || len(pcs) < 3) {
			t.Errorf("main thread: frames %+v do not reach the program's code", pcs)
		}
	}
	if exact < 3 {
		t.Errorf("only %d of %d threads unwound exactly from CFI", exact, len(w.tids()))
	}
}

// blockedInRead counts the threads of pid blocked in read() (system call 0
// in /proc/PID/task/TID/syscall).
func blockedInRead(pid int) int {
	tids, _ := threads(pid)
	n := 0
	for _, tid := range tids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
		if strings.HasPrefix(string(b), "0 ") {
			n++
		}
	}
	return n
}
