// Command buildsize builds a signed patch from every fixture of the corpus
// and prints a table of patch sizes and build times (docs/PERFORMANCE.md).
//
//	go run ./bench/buildsize [-n 20]
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/hotpatch/hotpatch/build"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

func main() {
	n := flag.Int("n", 20, "builds per fixture; the median time is shown")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "buildsize:", err)
		os.Exit(1)
	}
}

func run(n int) error {
	names, err := fixture.Names()
	if err != nil {
		return err
	}
	key, _, err := patch.GenerateKey()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(w, "fixture\ttarget size\tpatch file\ttext\trodata\tfunctions\trelocs\tbuild (median)\t")
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
			p, err = build.Build(orig.Target, fixed.Target, build.Options{ID: name})
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
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%v\t\n", name, st.Size(), len(data), len(p.Text), len(p.ROData),
			len(p.Functions), len(p.Relocs), times[len(times)/2].Round(time.Microsecond))
	}
	return w.Flush()
}
