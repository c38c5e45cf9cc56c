package unwind

import (
	"debug/elf"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// snapshotChain stops the chain program (read <- c <- b <- a <- main <-
// __libc_start_call_main <- __libc_start_main <- _start: 8 frames) and
// copies its registers, modules and stack, so that the benchmark unwinds
// without touching the process.
func snapshotChain(b *testing.B) (Regs, []Module, *fakeMem) {
	b.Helper()
	exe := build(b, "chain", "-O2", "-fomit-frame-pointer")
	p := start(b, exe)
	waitReading(b, p.Pid(), 1)
	var regs Regs
	var mods []Module
	var mem *fakeMem
	var readErr error
	err := withStopped(p.Pid(), []int{p.Pid()}, func(threads []thread) {
		regs = threads[0].regs
		mods = modules(images(b, p.Pid()))
		lo, hi, err := stackMapping(p.Pid())
		if err != nil {
			readErr = err
			return
		}
		lo = regs.RSP &^ 0xfff
		mem = &fakeMem{base: lo, data: make([]byte, hi-lo)}
		readErr = procMem(p.Pid()).ReadAt(mem.data, lo)
	})
	if err == nil {
		err = readErr
	}
	if err != nil {
		b.Fatal(err)
	}
	if err := p.Close(); err != nil {
		b.Fatal(err)
	}
	return regs, mods, mem
}

func stackMapping(pid int) (lo, hi uint64, err error) {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(maps), "\n") {
		if f := strings.Fields(l); len(f) >= 6 && f[5] == "[stack]" {
			a, b, _ := strings.Cut(f[0], "-")
			lo, _ = strconv.ParseUint(a, 16, 64)
			hi, _ = strconv.ParseUint(b, 16, 64)
			return lo, hi, nil
		}
	}
	return 0, 0, fmt.Errorf("no [stack] in the maps of %d", pid)
}

func BenchmarkUnwind(b *testing.B) {
	regs, mods, mem := snapshotChain(b)
	frames, err := Unwind(regs, mods, mem, 64)
	if err != nil || len(frames) != 8 {
		b.Fatalf("Unwind = %d frames, %v; want 8 frames", len(frames), err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := Unwind(regs, mods, mem, 64); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/8, "ns/frame")
}

func BenchmarkLoadLibc(b *testing.B) {
	f, err := elf.Open("/lib/x86_64-linux-gnu/libc.so.6")
	if err != nil {
		b.Skip(err)
	}
	defer f.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load(f); err != nil {
			b.Fatal(err)
		}
	}
}
