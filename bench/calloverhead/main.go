// Command calloverhead measures what a live patch costs on every call of
// the function it replaces: the patched call enters the original function,
// takes the jump the engine wrote at its entry and runs the new code in the
// patch mapping. It compares three processes of bench/calloverhead/prog,
// whose checksum() the fix changes (a bounds check):
//
//  1. the original build, unpatched;
//  2. the fixed build (the fix compiled in);
//  3. the original build with the patch applied live by engine.Apply.
//
// Each process times loops of calls to checksum on inputs of a few lengths,
// called directly and through a function pointer, and reports nanoseconds
// per call. For each length and kind of call the three processes run one
// after the other, in an order that rotates every round, so that drift of
// the machine (clock speed, a neighbour's load) falls on all three alike.
// The table shows the median and the minimum over the rounds, and each
// case against the fixed build: the median over the rounds of the
// difference between the two in the same round.
//
//	go run ./bench/calloverhead [-rounds 15] [-calls 5000000] [-len 1,16,64] [-v]
//
// Run it from the repository root. It starts, patches and kills only the
// processes it started itself; they also exit by themselves at the end of
// their input, should this program die first.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

var (
	rounds = flag.Int("rounds", 15, "timed rounds per case and call kind; the table shows their median and minimum")
	calls  = flag.Int("calls", 5_000_000, "calls per round")
	lens   = flag.String("len", "1,16,64", "input lengths in bytes, comma-separated (at most 4096)")
	raw    = flag.Bool("v", false, "print every round's figures to stderr")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "calloverhead:", err)
		os.Exit(1)
	}
}

// The program's commands (see prog/orig/prog.c): each times a loop of calls
// and answers with nanoseconds per call.
var kinds = []struct{ name, cmd string }{
	{"direct", "run"},
	{"through a pointer", "ptr"},
}

func run() error {
	if *rounds < 1 || *calls < 1 {
		return fmt.Errorf("-rounds and -calls must be at least 1")
	}
	var sizes []int
	for _, f := range strings.Split(*lens, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 4096 {
			return fmt.Errorf("-len: %q is not a length from 0 to 4096", f)
		}
		sizes = append(sizes, n)
	}
	flags := []string{"-O2", "-ffunction-sections", "-fdata-sections", "-Wl,--emit-relocs"}
	orig, err := fixture.Compile("calloverhead-orig", []string{"bench/calloverhead/prog/orig/prog.c"}, flags...)
	if err != nil {
		return err
	}
	fixed, err := fixture.Compile("calloverhead-fixed", []string{"bench/calloverhead/prog/fixed/prog.c"}, flags...)
	if err != nil {
		return err
	}
	p, pub, err := signedPatch(orig, fixed)
	if err != nil {
		return err
	}

	cases := []struct {
		name  string
		bin   string
		patch bool
	}{
		{"original build", orig, false},
		{"fixed build (fix compiled in)", fixed, false}, // fixedCase
		{"original build, patched live", orig, true},
	}
	procs := make([]*proc, len(cases))
	for i, c := range cases {
		pr, err := start(c.bin)
		if err != nil {
			return err
		}
		defer pr.kill()
		procs[i] = pr
	}
	// "check" sums an over-long input, which the fix refuses (0): it tells
	// the fixed behaviour from the original, and answering it means the
	// program is up and back in read(), out of checksum, ready to patch.
	want := make([]string, len(cases))
	for i, pr := range procs {
		if want[i], err = pr.ask("check"); err != nil {
			return err
		}
	}
	if want[0] == want[1] {
		return fmt.Errorf("original and fixed builds both answer %q to check; the fix is not in prog/fixed", want[0])
	}
	for i, c := range cases {
		if !c.patch {
			continue
		}
		if _, err := engine.Apply(procs[i].pid(), p, engine.Options{Trusted: []patch.PublicKey{pub}}); err != nil {
			return fmt.Errorf("applying the patch to %s (pid %d): %w", c.name, procs[i].pid(), err)
		}
		got, err := procs[i].ask("check")
		if err != nil {
			return err
		}
		if got != want[1] {
			return fmt.Errorf("patched process answers %q to check, the fixed build %q; the patch did not take", got, want[1])
		}
	}

	ns, err := measure(procs, sizes)
	if err != nil {
		return err
	}
	fmt.Println("| case | call | input | ns/call p50 | ns/call min | vs fixed build (p50 of the rounds) |")
	fmt.Println("|---|---|---:|---:|---:|---:|")
	for z, size := range sizes {
		for k, kind := range kinds {
			for i, c := range cases {
				v := ns[z][k][i]
				fmt.Printf("| %s | %s | %d B | %.2f | %.2f | %s |\n", c.name, kind.name, size, median(v), slices.Min(v), versus(v, ns[z][k][fixedCase]))
			}
		}
	}
	return nil
}

// fixedCase is the index of the fixed build in run's cases, the one the
// others are compared with.
const fixedCase = 1

// measure times every kind of call on every input size in every process,
// *rounds times, and returns ns[size][kind][process], one figure per round.
// For one size and kind the processes run back to back, the first one
// changing every round; a first round warms up and is dropped.
func measure(procs []*proc, sizes []int) ([][][][]float64, error) {
	ns := make([][][][]float64, len(sizes))
	for z := range ns {
		ns[z] = make([][][]float64, len(kinds))
		for k := range ns[z] {
			ns[z][k] = make([][]float64, len(procs))
		}
	}
	for r := -1; r < *rounds; r++ {
		for z, size := range sizes {
			for k, kind := range kinds {
				for j := range procs {
					i := (j + r + 1) % len(procs)
					v, err := procs[i].time(kind.cmd, *calls, size)
					if err != nil {
						return nil, err
					}
					if *raw {
						fmt.Fprintf(os.Stderr, "round %d\t%d B\t%s\tprocess %d\t%.3f\n", r, size, kind.name, i+1, v)
					}
					if r >= 0 {
						ns[z][k][i] = append(ns[z][k][i], v)
					}
				}
			}
		}
	}
	return ns, nil
}

// versus formats the median over the rounds of v[r] - base[r], in
// nanoseconds and as a share of base's median; "—" if v is base.
func versus(v, base []float64) string {
	if &v[0] == &base[0] {
		return "—"
	}
	d := make([]float64, len(v))
	for r := range v {
		d[r] = v[r] - base[r]
	}
	md := median(d)
	return fmt.Sprintf("%+.2f ns (%+.1f%%)", md, 100*md/median(base))
}

// signedPatch builds the patch from orig to fixed, signs it with a fresh
// key and loads it back, as the CLI would from a file. It checks that the
// patch replaces checksum and nothing else, so that the patched process
// times the same caller as the original.
func signedPatch(orig, fixed string) (*patch.Patch, patch.PublicKey, error) {
	u, err := builder.Build(orig, fixed, builder.Options{ID: "calloverhead-fix"})
	if err != nil {
		return nil, nil, err
	}
	var names []string
	for _, f := range u.Functions {
		names = append(names, f.Name)
	}
	if !slices.Equal(names, []string{"checksum"}) {
		return nil, nil, fmt.Errorf("the patch carries %v, want only checksum; the benchmark would time other code than the call", names)
	}
	key, pub, err := patch.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	data, err := patch.Sign(u, key)
	if err != nil {
		return nil, nil, err
	}
	p, err := patch.Load(data)
	if err != nil {
		return nil, nil, err
	}
	return p, pub, nil
}

// replyTimeout bounds the wait for one answer of the program.
const replyTimeout = 30 * time.Second

// proc is a running prog with pipes to its stdin and stdout. It is not
// waited for until kill: a pending wait in this process would take the
// ptrace stops of the tracee from the engine's tracer thread.
type proc struct {
	cmd *exec.Cmd
	in  *os.File
	out *os.File
	rd  *bufio.Reader
}

func start(bin string) (*proc, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, os.Stderr
	err = cmd.Start()
	inR.Close() // the child has its copies
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	return &proc{cmd: cmd, in: inW, out: outR, rd: bufio.NewReader(outR)}, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// kill ends the program with SIGKILL and reaps it.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.in.Close()
	p.out.Close()
}

// ask sends one command line and returns the program's one-line answer.
func (p *proc) ask(line string) (string, error) {
	if _, err := p.in.WriteString(line + "\n"); err != nil {
		return "", fmt.Errorf("writing %q to %s (pid %d): %w", line, p.cmd.Path, p.pid(), err)
	}
	p.out.SetReadDeadline(time.Now().Add(replyTimeout))
	reply, err := p.rd.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the answer to %q from %s (pid %d): %w", line, p.cmd.Path, p.pid(), err)
	}
	return strings.TrimSuffix(reply, "\n"), nil
}

// time runs one timed loop of n calls on size bytes and returns
// nanoseconds per call.
func (p *proc) time(cmd string, n, size int) (float64, error) {
	reply, err := p.ask(fmt.Sprintf("%s %d %d", cmd, n, size))
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseFloat(reply, 64)
	if err != nil {
		return 0, fmt.Errorf("%s (pid %d) answered %q to %s: %w", p.cmd.Path, p.pid(), reply, cmd, err)
	}
	return v, nil
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
