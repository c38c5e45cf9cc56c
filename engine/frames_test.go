package engine

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestFramesFromCFI checks that the consistency check really unwinds with
// CFI (rather than falling back to the stack scan) on an -O2 program's
// threads, blocked in read() or spinning, and that every unwind reaches
// the program's own code.
func TestFramesFromCFI(t *testing.T) {
	p := stopme(t, 4)
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
	for _, tid := range w.tids() {
		var regs unix.PtraceRegs
		if err := w.tr.do(func() error { regs, err = getRegs(tid); return err }); err != nil {
			t.Fatal(err)
		}
		pcs, ok := tg.frames(regs)
		if !ok {
			t.Errorf("thread %d: no exact unwind", tid)
			continue
		}
		inExe := false
		for _, pc := range pcs {
			inExe = inExe || (pc >= exe.Start && pc < exe.End)
		}
		if !inExe || len(pcs) < 3 {
			t.Errorf("thread %d: frames %x do not reach the program's code", tid, pcs)
		}
	}
}
