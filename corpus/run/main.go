// Command run measures the builder on the corpus of real security fixes and
// writes docs/CORPUS.md (make corpus). Run it as root from the repository
// root: it builds bin/hotpatch from this tree, fetches and builds the source
// packages into a cache, and drives live processes it starts itself.
//
//	go run ./corpus/run [-only SUBSTRING] [-out docs/CORPUS.md] [-cache DIR]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/corpus"
)

func main() {
	home, _ := os.UserHomeDir()
	cache := flag.String("cache", filepath.Join(home, ".cache", "hotpatch", "corpus"), "download and build cache")
	only := flag.String("only", "", "check only the fixes whose id contains this")
	out := flag.String("out", "docs/CORPUS.md", "report to write (only when every fix ran)")
	workers := flag.Int("workers", 4, "concurrent load clients")
	skip := flag.String("skip", "", "comma-separated projects to leave out (named in the report)")
	flag.Parse()
	if err := run(*cache, *only, *skip, *out, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "corpus:", err)
		os.Exit(1)
	}
}

func run(cache, only, skip, out string, workers int) error {
	start := time.Now()
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	projects, err := corpus.LoadAll(filepath.Join(repo, "corpus"))
	if err != nil {
		return err
	}
	bin := filepath.Join(cache, "bin", "hotpatch")
	if b, err := exec.Command("go", "build", "-o", bin, "./cmd/hotpatch").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/hotpatch: %v: %s", err, b)
	}
	key := filepath.Join(cache, "corpus")
	if _, err := os.Stat(key + ".key"); err != nil {
		if b, err := exec.Command(bin, "keygen", "-o", key).CombinedOutput(); err != nil {
			return fmt.Errorf("hotpatch keygen: %v: %s", err, b)
		}
	}
	r := &corpus.Runner{B: &corpus.Builder{Cache: cache, Repo: repo, Log: os.Stderr}, Hotpatch: bin,
		Key: key + ".key", Pub: key + ".pub", Workers: workers}
	var results []corpus.Result
	all := true
	skipped := map[string]bool{}
	for _, s := range strings.Split(skip, ",") {
		if s != "" {
			skipped[s] = true
		}
	}
	var left []string
	for _, p := range projects {
		if skipped[p.Name] {
			left = append(left, fmt.Sprintf("%s (%d fixes)", p.Name, len(p.Fixes)))
			continue
		}
		for _, f := range p.Fixes {
			if only != "" && !strings.Contains(f.ID, only) {
				all = false
				continue
			}
			for _, v := range f.Variants {
				t := time.Now()
				res := r.Check(p, f, v)
				fmt.Fprintf(os.Stderr, "%-28s %-5s %-8s %s (%s)\n", f.ID, v, res.Outcome, res.Detail, time.Since(t).Round(time.Millisecond))
				results = append(results, res)
			}
		}
	}
	js, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(filepath.Join(cache, "results.json"), js, 0o644); err != nil {
		return err
	}
	elapsed := time.Since(start)
	var buf bytes.Buffer
	note := ""
	if len(left) > 0 {
		note = "Left out of this run (-skip): " + strings.Join(left, ", ") + "."
	}
	corpus.Report(&buf, results, elapsed, note)
	if !all {
		fmt.Print(buf.String())
		return nil
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}
