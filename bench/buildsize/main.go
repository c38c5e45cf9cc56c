// Command buildsize builds a signed patch from every fixture of the corpus
// and prints a table of patch sizes and build times (docs/PERFORMANCE.md).
//
//	go run ./bench/buildsize [-n 20]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

func main() {
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "buildsize:", err)
		os.Exit(1)
	}
}

var (
	n         = flag.Int("n", 20, "builds per fixture; the median time is shown")
	large     = flag.Int("large", 4000, "functions in the synthetic large target")
	onlyLarge = flag.Bool("only-large", false, "measure the synthetic large target only")
)

func run(n int) error {
	names, err := fixture.Names()
	if err != nil {
		return err
	}
	key, _, err := patch.GenerateKey()
	if err != nil {
		return err
	}
	w := os.Stdout
	fmt.Fprintln(w, "| fixture | target (bytes) | patch file (bytes) | text | rodata | functions | relocations | build time (median) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	if *onlyLarge {
		names = nil
	}
	for _, name := range names {
		fx, err := fixture.Load(name)
		if err != nil {
			return err
		}
		if fx.Spec.Expect.Result != "patch" {
			continue
		}
		fl := fx.DefaultFlags()
		orig, err := fx.Build(fixture.Orig, fl)
		if err != nil {
			return err
		}
		fixed, err := fx.Build(fixture.Fixed, fl)
		if err != nil {
			return err
		}
		var times []time.Duration
		var p *patch.Patch
		for range n {
			start := time.Now()
			p, err = builder.Build(orig.Target, fixed.Target, builder.Options{ID: name})
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			times = append(times, time.Since(start))
		}
		slices.Sort(times)
		data, err := patch.Sign(p, key)
		if err != nil {
			return err
		}
		st, err := os.Stat(orig.Target)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d | %v |\n", name, st.Size(), len(data), len(p.Text), len(p.ROData),
			len(p.Functions), len(p.Relocs), times[len(times)/2].Round(time.Microsecond))
	}
	for _, nopie := range []bool{false, true} {
		if err := synthetic(w, key, *large, nopie); err != nil {
			return err
		}
	}
	return nil
}

// synthetic measures the builder on a large generated program: nfunc
// functions that call each other and share globals and strings, of which
// the fix changes one. One function in 50 copies a local array of
// pointers, whose template gcc keeps as unnamed data (.data under PIE,
// .rodata reached by absolute relocations under -no-pie): the patch must
// stay proportional to the fix, not to the layout shift behind it.
func synthetic(w *os.File, key patch.PrivateKey, nfunc int, nopie bool) error {
	dir, err := os.MkdirTemp("", "hotpatch-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	gen := func(fixed bool) string {
		var b strings.Builder
		b.WriteString("#include <stdio.h>\n#include <string.h>\nint counters[64];\n")
		for i := 0; i < nfunc; i++ {
			fmt.Fprintf(&b, "__attribute__((noinline)) int f%d(const char *s) {\n", i)
			if fixed && i == nfunc/2 {
				b.WriteString("  if (strlen(s) > 64) { fprintf(stderr, \"too long\\n\"); return -1; }\n")
			}
			fmt.Fprintf(&b, "  counters[%d]++;\n  if (s[0] == '%c') return (int)strlen(s) + %d;\n", i%64, 'a'+i%26, i)
			if i%50 == 25 {
				b.WriteString("  struct { long v; const char *n; } t[] = {")
				for k := 0; k < 24; k++ {
					fmt.Fprintf(&b, "{%d, \"t%d_%d\"}, ", k, i, k)
				}
				b.WriteString("{0, 0}};\n  for (int k = 0; t[k].n; k++) if (t[k].v == s[1]) return puts(t[k].n);\n")
			}
			if i > 0 {
				fmt.Fprintf(&b, "  return f%d(s + 1) + printf(\"f%d %%s\\n\", s);\n}\n", i-1, i)
			} else {
				b.WriteString("  return 0;\n}\n")
			}
		}
		fmt.Fprintf(&b, "int main(int argc, char **argv) { return f%d(argc > 1 ? argv[1] : \"x\"); }\n", nfunc-1)
		return b.String()
	}
	var bins [2]string
	for i, fixed := range []bool{false, true} {
		sub := filepath.Join(dir, fmt.Sprint(i))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		src := filepath.Join(sub, "large.c")
		if err := os.WriteFile(src, []byte(gen(fixed)), 0o644); err != nil {
			return err
		}
		bins[i] = filepath.Join(sub, "large")
		args := []string{"-O2", "-ffunction-sections", "-fdata-sections", "-Wl,--emit-relocs", "-o", bins[i], "large.c"}
		if nopie {
			args = append(args, "-fno-pie", "-no-pie")
		}
		cmd := exec.Command("gcc", args...)
		cmd.Dir = sub
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("gcc: %v: %s", err, out)
		}
	}
	var times []time.Duration
	var p *patch.Patch
	for range 5 {
		start := time.Now()
		var err error
		if p, err = builder.Build(bins[0], bins[1], builder.Options{ID: "large"}); err != nil {
			return err
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	data, err := patch.Sign(p, key)
	if err != nil {
		return err
	}
	st, err := os.Stat(bins[0])
	if err != nil {
		return err
	}
	kind := "PIE"
	if nopie {
		kind = "non-PIE"
	}
	fmt.Fprintf(w, "| synthetic, %d functions, %s | %d | %d | %d | %d | %d | %d | %v |\n", nfunc, kind, st.Size(), len(data), len(p.Text), len(p.ROData),
		len(p.Functions), len(p.Relocs), times[len(times)/2].Round(time.Microsecond))
	return nil
}
