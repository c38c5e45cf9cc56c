// Command stock checks which Debian packages rebuild into the very bytes
// Debian ships (issue 14): for each package it downloads the source package
// and the binary package of the same version, installs the build
// dependencies, rebuilds the package with dpkg-buildpackage (the package's
// own flags: dpkg-buildflags plus its debian/rules), once as Debian does and
// once with -Wl,--emit-relocs appended to LDFLAGS, and compares the module's
// loaded segments with the shipped file (stock.Compare, the proof hotpatch stock uses).
//
//	go run ./corpus/stock [-cache DIR] [-timeout 15m] [PACKAGE…]
//
// It prints a markdown table row per package and keeps the results in
// DIR/stock.json. Run as root (apt-get build-dep).
package main

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/stock"
)

// pkg is a source package, the binary package that ships the module, and
// the module's file name.
type pkg struct {
	Source, Binary, Module string
}

var known = []pkg{
	{"zlib", "zlib1g", "libz.so.1.*"},
	{"expat", "libexpat1", "libexpat.so.1.*"},
	{"giflib", "libgif7", "libgif.so.7.*"},
	{"c-ares", "libc-ares2", "libcares.so.2.*"},
	{"libyaml", "libyaml-0-2", "libyaml-0.so.2.*"},
	{"jansson", "libjansson4", "libjansson.so.4.*"},
	{"dnsmasq", "dnsmasq-base", "dnsmasq"},
	{"memcached", "memcached", "memcached"},
	{"libpng1.6", "libpng16-16", "libpng16.so.16.*"},
	{"libexif", "libexif12", "libexif.so.12.*"},
	{"tiff", "libtiff6", "libtiff.so.6.*"},
	{"nghttp2", "libnghttp2-14", "libnghttp2.so.14.*"},
	{"pcre2", "libpcre2-8-0", "libpcre2-8.so.0.*"},
	{"lighttpd", "lighttpd", "lighttpd"},
}

type result struct {
	Source, Version, Module string
	Plain, Relocs           string // the proof's verdict, or why there is none
	PlainSame, RelocsSame   bool
	// Fallback is what the per-function proof finds when the rebuild
	// with relocations is not the shipped file (builder.ProveUnits).
	Fallback  string
	BuildTime string
}

func main() {
	home, _ := os.UserHomeDir()
	cache := flag.String("cache", filepath.Join(home, ".cache", "hotpatch", "stock"), "download and build directory")
	timeout := flag.Duration("timeout", 15*time.Minute, "time allowed for each rebuild")
	table := flag.Bool("table", false, "print the table of the results kept so far and exit")
	flag.Parse()
	want := map[string]bool{}
	for _, a := range flag.Args() {
		want[a] = true
	}
	var results []result
	state := filepath.Join(*cache, "stock.json")
	if b, err := os.ReadFile(state); err == nil {
		json.Unmarshal(b, &results)
	}
	if *table {
		fmt.Println("| source package | version | module | rebuilt as Debian builds it | + `-Wl,--emit-relocs` | per-function fallback (when not identical) | both rebuilds took |")
		fmt.Println("|---|---|---|---|---|---|---|")
		for _, r := range results {
			fmt.Println(row(r))
		}
		return
	}
	for _, p := range known {
		if len(want) > 0 && !want[p.Source] {
			continue
		}
		r := check(*cache, p, *timeout)
		fmt.Println(row(r))
		replaced := false
		for i := range results {
			if results[i].Source == r.Source {
				if r.BuildTime == "" {
					r.BuildTime = results[i].BuildTime // both trees were cached: keep the time of the build
				}
				results[i], replaced = r, true
			}
		}
		if !replaced {
			results = append(results, r)
		}
		b, _ := json.MarshalIndent(results, "", "  ")
		os.MkdirAll(*cache, 0o755)
		os.WriteFile(state, b, 0o644)
	}
}

func row(r result) string {
	fb := r.Fallback
	if fb == "" {
		fb = "–"
	}
	return fmt.Sprintf("| %s | %s | `%s` | %s | %s | %s | %s |", r.Source, r.Version, r.Module, r.Plain, r.Relocs, fb, r.BuildTime)
}

func sh(dir string, timeout time.Duration, env []string, script string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-ec", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("over %v", timeout)
	}
	if err != nil {
		t := strings.TrimSpace(string(out))
		if len(t) > 300 {
			t = t[len(t)-300:]
		}
		return fmt.Errorf("%v: …%s", err, strings.Join(strings.Fields(t), " "))
	}
	return nil
}

func check(cache string, p pkg, timeout time.Duration) result {
	r := result{Source: p.Source, Module: p.Module}
	// The version whose source downloads: the main archive's (the security
	// archive's source pool is not reachable here), not necessarily the candidate.
	out, err := exec.Command("apt-cache", "showsrc", "--only-source", p.Source).Output()
	if err != nil {
		r.Plain = "apt-cache showsrc: " + err.Error()
		return r
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Version:" && r.Version == "" {
			r.Version = f[1]
		}
	}
	if r.Version == "" {
		r.Plain = "no source package " + p.Source
		return r
	}
	dir := filepath.Join(cache, p.Source)
	os.MkdirAll(dir, 0o755)
	// The shipped binary package, unpacked (not installed: the machine keeps its own).
	ship := filepath.Join(dir, "shipped-"+strings.ReplaceAll(r.Version, ":", "%3a"))
	if _, err := os.Stat(ship); err != nil {
		os.RemoveAll(ship + ".tmp")
		os.MkdirAll(ship+".tmp", 0o755)
		if err := sh(ship+".tmp", 10*time.Minute, nil, fmt.Sprintf("apt-get download -q %s=%s && dpkg-deb -x *.deb root",
			p.Binary, r.Version)); err != nil {
			r.Plain = fmt.Sprintf("download of %s=%s: %v", p.Binary, r.Version, err)
			return r
		}
		if err := os.Rename(ship+".tmp", ship); err != nil {
			r.Plain = err.Error()
			return r
		}
	}
	shipped, _ := find(filepath.Join(ship, "root"), p.Binary, p.Module)
	if shipped == "" {
		r.Plain = "no " + p.Module + " in " + p.Binary
		return r
	}
	r.Module = filepath.Base(shipped)
	srcVer := r.Version // the binary's version is the source's for these packages
	if err := sh(dir, 30*time.Minute, []string{"DEBIAN_FRONTEND=noninteractive"},
		fmt.Sprintf("apt-get -o DPkg::Lock::Timeout=600 build-dep -q -y %s=%s >/dev/null", p.Source, srcVer)); err != nil {
		r.Plain = "apt-get build-dep: " + err.Error()
		return r
	}
	start, built := time.Now(), false
	for _, v := range []struct {
		name string
		env  []string
		out  *string
		same *bool
	}{
		{"plain", nil, &r.Plain, &r.PlainSame},
		{"relocs", []string{"DEB_LDFLAGS_APPEND=-Wl,--emit-relocs"}, &r.Relocs, &r.RelocsSame},
	} {
		tree := filepath.Join(dir, v.name)
		note := ""
		if _, err := os.Stat(filepath.Join(tree, ".built")); err != nil {
			built = true
			os.RemoveAll(tree)
			os.MkdirAll(tree, 0o755)
			err := sh(tree, 10*time.Minute, nil, fmt.Sprintf("apt-get source -q %s=%s >/dev/null", p.Source, srcVer))
			if err == nil {
				err = sh(tree, timeout, append([]string{"DEB_BUILD_OPTIONS=nocheck nodoc parallel=2"}, v.env...),
					"cd */ && dpkg-buildpackage -B -uc -us -j2 >../build.log 2>&1 && touch ../.built")
			}
			if err != nil {
				// A later packaging step may fail (e.g. nodoc leaves out files a rule
				// then expects) after the module is built and stripped into
				// debian/BINARY/: compare that, and say so.
				note = "(packaging failed after the module was built: " + err.Error() + ") "
			}
		}
		built, _ := find(filepath.Join(tree, filepath.Base(glob1(tree, "*/"))), p.Binary, p.Module)
		if built == "" || note != "" && !strings.Contains(built, "/debian/"+p.Binary+"/") {
			*v.out = note + "no " + p.Module + " found in the rebuilt tree"
			continue
		}
		proof, err := stock.Compare(shipped, built)
		var nr *stock.NotReproducibleError
		switch {
		case errors.As(err, &nr):
			where := nr.Section + " differs"
			if nr.Section == "" {
				where = "the program headers differ"
			}
			*v.out = note + "**no**: " + where + " (" + nr.Why + ")"
			if nr.Cause != "" {
				*v.out += "; " + nr.Cause
			}
		case err != nil:
			*v.out = err.Error()
			continue
		default:
			*v.same = true
			*v.out = note + "**yes** (identical loaded segments; allowed to differ: " + strings.Join(proof.Ignored, "; ") + ")"
		}
	}
	if built {
		r.BuildTime = time.Since(start).Round(time.Second).String()
	}
	if !r.RelocsSame {
		r.Fallback = fallback(filepath.Join(dir, "relocs"), p, shipped)
	}
	return r
}

// fallback runs the per-function proof of hotpatch stock's fallback
// (without debug symbols: Debian's debug archive is not reachable here)
// between the unstripped rebuild with relocations and the shipped file.
func fallback(tree string, p pkg, shipped string) string {
	var rebuilt string
	filepath.Walk(tree, func(path string, info os.FileInfo, err error) error {
		if err != nil || rebuilt != "" || !info.Mode().IsRegular() {
			return nil
		}
		if ok, _ := filepath.Match(p.Module, info.Name()); !ok {
			return nil
		}
		f, err := elf.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		if f.Machine == elf.EM_X86_64 && f.Section(".symtab") != nil && f.Section(".debug_info") != nil && f.Section(".rela.text") != nil {
			rebuilt = path
		}
		return nil
	})
	if rebuilt == "" {
		return "no unstripped rebuild with relocations found"
	}
	units, err := builder.ProveUnits(rebuilt, shipped, builder.RetargetOptions{CodeAlone: true})
	if err != nil {
		return "not usable: " + err.Error()
	}
	full, funcs, proven := 0, 0, 0
	for _, u := range units {
		funcs += u.Functions
		proven += u.Proven
		if u.Proven == u.Functions {
			full++
		}
	}
	verdict := "a fix confined to those units can be patched"
	if proven == funcs {
		verdict = "**all code the same**: patchable with `--without-symbols`"
	} else if full == 0 {
		verdict = "**no** unit: compiled otherwise"
	}
	return fmt.Sprintf("%d of %d compile units, %d of %d functions the same code; %s", full, len(units), proven, funcs, verdict)
}

func glob1(dir, pattern string) string {
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, x := range m {
		if st, err := os.Stat(x); err == nil && st.IsDir() {
			return x
		}
	}
	return ""
}

// find returns the x86-64 ELF file under root whose name matches pattern,
// preferring the packaging tree of the binary package (debian/BINARY/,
// stripped as shipped) over other packages' trees (a lib32 build, say) and
// build directories.
func find(root, binary, pattern string) (string, error) {
	var best string
	rank := func(path string) int {
		switch {
		case strings.Contains(path, "/debian/"+binary+"/"):
			return 3
		case strings.Contains(path, "/debian/tmp/"):
			return 2
		case strings.Contains(path, "/debian/"):
			return 0
		}
		return 1
	}
	err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !info.Mode().IsRegular() {
			return nil
		}
		if ok, _ := filepath.Match(pattern, info.Name()); !ok || !isX86ELF(path) {
			return nil
		}
		if best == "" || rank(path) > rank(best) {
			best = path
		}
		return nil
	})
	return best, err
}

func isX86ELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Machine == elf.EM_X86_64
}
