package stock

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hotpatch/hotpatch/builder"
)

// recipe changes whenever the way a tree is made or built changes, so that
// old cache entries are not reused.
const recipe = "stock-2"

// Package is the distribution package an installed file belongs to.
type Package struct {
	// File is the installed file, symbolic links resolved.
	File string
	// Name and Version are the binary package's ("libexpat1:amd64").
	Name, Version string
	// Source and SourceVersion name the source package it was built from.
	Source, SourceVersion string
}

// Options say what to rebuild and where.
type Options struct {
	// Binary is the installed executable or shared library (a symbolic
	// link such as /lib/x86_64-linux-gnu/libz.so.1 is fine).
	Binary string
	// SourceVersion fetches this version of the source package instead of
	// the installed one: for when the archive no longer has the installed
	// version's source, together with DropPatches to step back to it.
	SourceVersion string
	// DropPatches are entries of debian/patches/series to leave out.
	DropPatches []string
	// Cache is where sources and rebuilds are kept (default: hotpatch/stock
	// in the user's cache directory). Rebuilds are cached by source version,
	// dropped patches and fixes.
	Cache string
	// Jobs is the build's parallelism (default: the number of CPUs).
	Jobs int
	// Log receives one line per step (nil: quiet).
	Log io.Writer
	// Symbols is the installed binary's debug file (from its -dbgsym
	// package), used when the rebuild is not byte-identical. Default: the
	// file the -dbgsym package installs for the binary's build-id under
	// /usr/lib/debug/.build-id, if present.
	Symbols string
	// BuildRoot, if set, is a directory for a minimal Debian system of the
	// host's release (made with debootstrap on first use, then reused) in
	// which the build dependencies are installed and the builds run,
	// instead of the host. Cache then defaults to, and must be, inside it.
	BuildRoot string
	// CodeAlone accepts, when no debug file is at hand, a proof that every
	// function of the installed binary is the rebuild's code
	// (builder.RetargetOptions.CodeAlone).
	CodeAlone bool
}

// FetchError reports a source package the archive would not give.
type FetchError struct {
	Source, Version, Reason string
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("stock: apt-get source %s=%s failed: %s (is a deb-src line for the release configured? the archive may no longer carry this version: name a newer one with --source-version and step back with --drop-patch)",
		e.Source, e.Version, e.Reason)
}

// Prepared is a proven rebuild of an installed file.
type Prepared struct {
	Package Package
	// Original is the rebuilt file, proven to be the installed one.
	Original string
	Proof    *Proof
	// Cached is set when the rebuild came from the cache.
	Cached bool
	// Different is set instead of Proof when the rebuild does not load the
	// installed file's bytes: patches are then retargeted to the installed
	// file by a per-function proof (builder.Retarget), with the symbols of
	// Symbols if set.
	Different *NotReproducibleError
	Symbols   string
	// Units says, when Different is set, which compile units of the
	// installed file are proven the same code as the rebuild's: a fix
	// confined to those can be patched.
	Units []builder.UnitProof
	// Retargeted is what the last Patch proved when Different is set.
	Retargeted *builder.RetargetProof

	opts       Options
	dsc        string
	rel        string // Original relative to its tree
	base       string // cache directory of this source version
	srcVersion string
}

// Identify finds the package that installed path and its source.
func Identify(ctx context.Context, path string) (*Package, error) {
	if !strings.Contains(path, "/") {
		if _, err := os.Stat(path); err != nil {
			// A package name ("libexpat1", "lighttpd"): its one
			// executable or shared library.
			file, err := packageModule(ctx, path)
			if err != nil {
				return nil, err
			}
			path = file
		}
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("stock: %w", err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return nil, fmt.Errorf("stock: %w", err)
	}
	var owner string
	for _, cand := range usrMergeAliases(real) {
		out, err := run(ctx, "", nil, "dpkg-query", "-S", cand)
		if err != nil {
			continue
		}
		line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		if name, _, ok := strings.Cut(line, ": "); ok {
			owner = strings.TrimSpace(strings.Split(name, ",")[0])
			break
		}
	}
	if owner == "" {
		return nil, fmt.Errorf("stock: no installed package owns %s (dpkg-query -S); only files installed from a distribution package can be rebuilt", real)
	}
	out, err := run(ctx, "", nil, "dpkg-query", "-W", "-f", "${Version}\t${source:Package}\t${source:Version}", owner)
	if err != nil {
		return nil, fmt.Errorf("stock: dpkg-query %s: %w", owner, err)
	}
	f := strings.Split(strings.TrimSpace(out), "\t")
	if len(f) != 3 || f[1] == "" || f[2] == "" {
		return nil, fmt.Errorf("stock: dpkg-query %s printed %q, not a version and source", owner, out)
	}
	return &Package{File: real, Name: owner, Version: f[0], Source: f[1], SourceVersion: f[2]}, nil
}

// packageModule returns the one executable or shared library an installed
// package ships; a package with several names them, to choose one.
func packageModule(ctx context.Context, name string) (string, error) {
	out, err := run(ctx, "", nil, "dpkg-query", "-L", name)
	if err != nil {
		first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		return "", fmt.Errorf("stock: %s is neither a file nor an installed package (%s)", name, first)
	}
	var mods, named []string
	for _, f := range strings.Split(out, "\n") {
		f = strings.TrimSpace(f)
		if f == "" || strings.HasPrefix(f, "/usr/lib/debug/") || strings.HasPrefix(f, "/usr/share/") {
			continue
		}
		st, err := os.Lstat(f)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		ef, err := elf.Open(f)
		if err != nil {
			continue
		}
		if ef.Type == elf.ET_EXEC || ef.Type == elf.ET_DYN {
			mods = append(mods, f)
			// The module the package is named after: an executable of
			// its name, or the library whose SONAME gives the name by
			// Debian's policy (libexpat.so.1 is in libexpat1).
			sonames, _ := ef.DynString(elf.DT_SONAME)
			base := filepath.Base(f)
			if base == name || len(sonames) == 1 && strings.Replace(sonames[0], ".so.", "", 1) == name {
				named = append(named, f)
			}
		}
		ef.Close()
	}
	if len(named) == 1 {
		return named[0], nil
	}
	switch len(mods) {
	case 0:
		return "", fmt.Errorf("stock: package %s ships no executable or shared library", name)
	case 1:
		return mods[0], nil
	}
	sort.Strings(mods)
	return "", fmt.Errorf("stock: package %s ships %d executables and libraries (%s); name the one to patch", name, len(mods), strings.Join(mods, ", "))
}

// usrMergeAliases lists path and its twin across Debian's merged /usr
// (dpkg knows /lib/x86_64-linux-gnu/libz.so.1.2.13, the file system
// resolves it to /usr/lib/…).
func usrMergeAliases(path string) []string {
	out := []string{path}
	for _, d := range []string{"/lib", "/bin", "/sbin", "/lib64"} {
		if strings.HasPrefix(path, "/usr"+d+"/") {
			out = append(out, strings.TrimPrefix(path, "/usr"))
		} else if strings.HasPrefix(path, d+"/") {
			out = append(out, "/usr"+path)
		}
	}
	return out
}

// Prepare rebuilds the installed file from its source package and proves
// the rebuild is the installed file. It needs dpkg-dev, network access to
// the distribution's source archive, and root to install build dependencies
// that are missing.
func Prepare(ctx context.Context, opts Options) (*Prepared, error) {
	if opts.Binary == "" {
		return nil, errors.New("stock: no binary named")
	}
	for _, tool := range []string{"dpkg-query", "dpkg-source", "apt-get", "patch"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("stock: %s is needed (Debian's dpkg-dev, apt and patch packages): %w", tool, err)
		}
	}
	pkg, err := Identify(ctx, opts.Binary)
	if err != nil {
		return nil, err
	}
	if opts.BuildRoot != "" {
		root, err := filepath.Abs(opts.BuildRoot)
		if err != nil {
			return nil, fmt.Errorf("stock: %w", err)
		}
		opts.BuildRoot = root
		inRoot := filepath.Join(root, "var", "cache", "hotpatch", "stock")
		if opts.Cache == "" {
			opts.Cache = inRoot
		} else if c, err := filepath.Abs(opts.Cache); err != nil || !strings.HasPrefix(c+"/", root+"/") {
			return nil, fmt.Errorf("stock: with a build root the cache must be inside it (%s), not %s", inRoot, opts.Cache)
		}
	}
	if opts.Cache == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("stock: no cache directory (%w); set one", err)
		}
		opts.Cache = filepath.Join(d, "hotpatch", "stock")
	}
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.NumCPU()
	}
	ver := opts.SourceVersion
	if ver == "" {
		ver = pkg.SourceVersion
	}
	p := &Prepared{Package: *pkg, opts: opts, srcVersion: ver,
		base: filepath.Join(opts.Cache, safeName(pkg.Source+"_"+ver))}
	p.logf("%s is %s %s, built from source %s %s", pkg.File, pkg.Name, pkg.Version, pkg.Source, pkg.SourceVersion)
	if opts.BuildRoot != "" {
		if err := ensureBuildRoot(ctx, opts.BuildRoot, p.logf); err != nil {
			return nil, err
		}
	}
	unlock, err := lockDir(p.base)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if p.dsc, err = p.fetch(ctx); err != nil {
		return nil, err
	}
	tree, cached, err := p.tree(ctx, nil)
	if err != nil {
		return nil, err
	}
	p.Cached = cached
	cands, err := findModules(tree, filepath.Base(pkg.File))
	if err != nil {
		return nil, err
	}
	var firstErr error
	var different *NotReproducibleError
	for _, c := range cands {
		proof, err := Compare(pkg.File, c)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			var nr *NotReproducibleError
			if different == nil && errors.As(err, &nr) && hasSymtab(c) {
				different = nr
				p.Original = c
				p.rel, _ = filepath.Rel(tree, c)
			}
			continue
		}
		p.Original, p.Proof = c, proof
		p.rel, _ = filepath.Rel(tree, c)
		if opts.Symbols != "" {
			p.logf("the rebuild is the installed file: the debug symbols %s are not needed", opts.Symbols)
		}
		p.logf("proved: %s is the installed %s (%d loaded segments, %d bytes identical; allowed to differ: %s)",
			c, pkg.File, proof.Segments, proof.Bytes, strings.Join(proof.Ignored, "; "))
		return p, nil
	}
	if different != nil {
		p.Different = different
		p.Symbols = opts.Symbols
		if p.Symbols == "" {
			p.Symbols = debugFileFor(debugDir, pkg.File)
		} else if strings.HasSuffix(p.Symbols, ".deb") {
			if p.Symbols, err = debugFromDeb(ctx, opts.Symbols, pkg.File, filepath.Join(p.base, "dbgsym")); err != nil {
				return nil, err
			}
		}
		how := "with the installed binary's exported symbols and its code alone"
		if p.Symbols != "" {
			how = "with the installed binary's symbols from " + p.Symbols
		}
		p.logf("not byte-identical: %v", different)
		units, err := builder.ProveUnits(p.Original, pkg.File, p.retargetOptions())
		if err != nil {
			return nil, fmt.Errorf("%w; and the per-function fallback cannot be used: %w", different, err)
		}
		p.Units = units
		p.logf("fallback: a patch is retargeted to the installed file by a per-function proof (every function of each compile unit it changes proven the same code, every reference found) %s; %d of %d compile units proven the same code", how, p.UnitsProven(), len(units))
		return p, nil
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("stock: the rebuild of %s %s made no file named %s", pkg.Source, ver, filepath.Base(pkg.File))
	}
	return nil, fmt.Errorf("%w; this binary cannot be patched from a rebuild of its source package (see docs/stock.md, \"When the rebuild is not the installed file\")", firstErr)
}

// UnitsProven counts the compile units of Units whose every function is
// proven the same code.
func (p *Prepared) UnitsProven() int {
	n := 0
	for _, u := range p.Units {
		if u.Proven == u.Functions {
			n++
		}
	}
	return n
}

func (p *Prepared) retargetOptions() builder.RetargetOptions {
	return builder.RetargetOptions{Symbols: p.Symbols, CodeAlone: p.opts.CodeAlone}
}

// hasSymtab reports whether the file has a full symbol table (an unstripped
// rebuild, which a per-function proof needs).
func hasSymtab(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Section(".symtab") != nil && f.Section(".debug_info") != nil
}

// debugDir is where Debian's -dbgsym packages install debug files.
const debugDir = "/usr/lib/debug/.build-id"

// debugName is where a debug file for build-id id lies under a
// .build-id directory.
func debugName(id []byte) string {
	h := hex.EncodeToString(id)
	return filepath.Join(h[:2], h[2:]+".debug")
}

// debugFileFor returns the debug file of an ELF file installed under dir
// (by its build-id), or "".
func debugFileFor(dir, path string) string {
	e, err := openELF(path)
	if err != nil {
		return ""
	}
	defer e.close()
	if len(e.buildID) < 2 {
		return ""
	}
	d := filepath.Join(dir, debugName(e.buildID))
	if _, err := os.Stat(d); err != nil {
		return ""
	}
	return d
}

// debugFromDeb unpacks a -dbgsym package (as apt-get download gives it)
// into dir and returns the debug file it holds for the binary's build-id.
func debugFromDeb(ctx context.Context, deb, binary, dir string) (string, error) {
	e, err := openELF(binary)
	if err != nil {
		return "", err
	}
	id := e.buildID
	e.close()
	if len(id) < 2 {
		return "", fmt.Errorf("stock: %s has no build-id, so no debug file can be matched to it", binary)
	}
	sum := sha256.Sum256([]byte(deb))
	out := filepath.Join(dir, hex.EncodeToString(sum[:6]))
	if err := os.RemoveAll(out); err != nil {
		return "", fmt.Errorf("stock: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", fmt.Errorf("stock: %w", err)
	}
	if o, err := run(ctx, "", nil, "dpkg-deb", "-x", deb, out); err != nil {
		return "", fmt.Errorf("stock: unpacking %s: %s", deb, lastLine(o, err))
	}
	d := filepath.Join(out, strings.TrimPrefix(debugDir, "/"), debugName(id))
	if _, err := os.Stat(d); err != nil {
		return "", fmt.Errorf("stock: %s holds no debug file for build-id %x of %s: it is the -dbgsym package of another build", deb, id, binary)
	}
	return d, nil
}

// Fixed rebuilds the source with fixes (unified diffs, applied with
// patch -p1 after the package's own series) the same way as the original,
// and returns the file that corresponds to Original.
//
// A fix may also be a directory: a copy of the package's source tree, as
// dpkg-source unpacks it with the package's patches applied, with the fix
// made in it (unbuilt). Its difference from that tree is the fix (the
// *.orig and *.rej files patch leaves are not).
func (p *Prepared) Fixed(ctx context.Context, fixes []string) (string, error) {
	if len(fixes) == 0 {
		return "", errors.New("stock: no fix given")
	}
	unlock, err := lockDir(p.base)
	if err != nil {
		return "", err
	}
	defer unlock()
	fixes = slices.Clone(fixes)
	for i, f := range fixes {
		if st, err := os.Stat(f); err == nil && st.IsDir() {
			if fixes[i], err = p.diffTree(ctx, f); err != nil {
				return "", err
			}
		}
	}
	tree, _, err := p.tree(ctx, fixes)
	if err != nil {
		return "", err
	}
	out := filepath.Join(tree, p.rel)
	if _, err := os.Stat(out); err != nil {
		return "", fmt.Errorf("stock: the fixed build made no %s: %w", p.rel, err)
	}
	return out, nil
}

func (p *Prepared) logf(format string, args ...any) {
	if p.opts.Log != nil {
		fmt.Fprintf(p.opts.Log, "stock: "+format+"\n", args...)
	}
}

// fetch downloads the source package once (apt-get source --download-only)
// and returns its .dsc.
func (p *Prepared) fetch(ctx context.Context) (string, error) {
	dl := filepath.Join(p.base, "download")
	if dsc := findDSC(dl); dsc != "" {
		return dsc, nil
	}
	tmp := dl + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", fmt.Errorf("stock: %w", err)
	}
	p.logf("fetching source %s=%s (apt-get source)", p.Package.Source, p.srcVersion)
	if out, err := run(ctx, tmp, nil, "apt-get", "source", "--download-only", "-q", p.Package.Source+"="+p.srcVersion); err != nil {
		return "", &FetchError{Source: p.Package.Source, Version: p.srcVersion, Reason: lastLine(out, err)}
	}
	os.RemoveAll(dl)
	if err := os.Rename(tmp, dl); err != nil {
		return "", fmt.Errorf("stock: %w", err)
	}
	dsc := findDSC(dl)
	if dsc == "" {
		return "", fmt.Errorf("stock: apt-get source left no .dsc in %s", dl)
	}
	return dsc, nil
}

// lockDir takes an exclusive lock on dir (a cache directory of one source
// version) until unlock: two hotpatch commands preparing the same package
// wait for each other instead of removing each other's half-made trees.
func lockDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("stock: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("stock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("stock: locking %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

func findDSC(dir string) string {
	m, _ := filepath.Glob(filepath.Join(dir, "*.dsc"))
	if len(m) == 1 {
		return m[0]
	}
	return ""
}

// tree unpacks and builds one variant (the package's series less
// DropPatches, plus fixes) unless the cache has it, and returns the built
// source tree.
func (p *Prepared) tree(ctx context.Context, fixes []string) (string, bool, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", recipe, filepath.Base(p.dsc))
	drops := append([]string(nil), p.opts.DropPatches...)
	sort.Strings(drops)
	for _, d := range drops {
		fmt.Fprintf(h, "drop %s\x00", d)
	}
	for _, f := range fixes {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", false, fmt.Errorf("stock: fix: %w", err)
		}
		fmt.Fprintf(h, "fix %d\x00", len(data))
		h.Write(data)
	}
	kind := "original"
	if len(fixes) > 0 {
		kind = "fixed"
	}
	dir := filepath.Join(p.base, kind+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	tree := filepath.Join(dir, "src")
	if _, err := os.Stat(filepath.Join(dir, "built")); err == nil {
		p.logf("%s build of %s %s from the cache: %s", kind, p.Package.Source, p.srcVersion, dir)
		return tree, true, nil
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, fmt.Errorf("stock: %w", err)
	}
	if out, err := run(ctx, dir, nil, "dpkg-source", "--no-check", "-x", "--skip-patches", p.dsc, "src"); err != nil {
		return "", false, fmt.Errorf("stock: dpkg-source -x %s: %s", p.dsc, lastLine(out, err))
	}
	if err := p.applySeries(ctx, tree, drops); err != nil {
		return "", false, err
	}
	for _, f := range fixes {
		abs, _ := filepath.Abs(f)
		if out, err := run(ctx, tree, nil, "patch", "-p1", "--batch", "--forward", "-i", abs); err != nil {
			return "", false, fmt.Errorf("stock: the fix %s does not apply to %s %s: %s", f, p.Package.Source, p.srcVersion, lastLine(out, err))
		}
	}
	if err := p.buildDeps(ctx, tree); err != nil {
		return "", false, err
	}
	start := time.Now()
	p.logf("building the %s %s %s with its own debian/rules and flags, plus -Wl,--emit-relocs (dpkg-buildpackage --rules-target=build; log: %s)", kind, p.Package.Source, p.srcVersion, filepath.Join(dir, "build.log"))
	env := []string{
		"DEB_BUILD_OPTIONS=nocheck nostrip noautodbgsym parallel=" + fmt.Sprint(p.opts.Jobs),
		"DEB_BUILD_PROFILES=nocheck",
		"DEB_LDFLAGS_APPEND=-Wl,--emit-relocs",
		"LC_ALL=C.UTF-8",
	}
	// dpkg-buildpackage runs the rules' build target with the environment
	// a package build has (DEB_BUILD_ARCH_OS and the other dpkg-architecture
	// variables, SOURCE_DATE_EPOCH from the changelog); rules test them
	// (mosquitto links libsystemd only when DEB_BUILD_ARCH_OS is linux).
	out, err := p.build(ctx, tree, env, "dpkg-buildpackage", "--rules-target=build", "--no-sign", "--no-check-builddeps", "--no-pre-clean")
	os.WriteFile(filepath.Join(dir, "build.log"), []byte(out), 0o644)
	if err != nil {
		return "", false, fmt.Errorf("stock: debian/rules build of %s %s failed: %s (see %s)", p.Package.Source, p.srcVersion, lastLine(out, err), filepath.Join(dir, "build.log"))
	}
	p.logf("built in %s", time.Since(start).Round(time.Second))
	if err := os.WriteFile(filepath.Join(dir, "built"), nil, 0o644); err != nil {
		return "", false, fmt.Errorf("stock: %w", err)
	}
	return tree, false, nil
}

// diffTree turns a fixed source tree into a patch file (in the cache): the
// difference from the unpacked source with its series applied.
func (p *Prepared) diffTree(ctx context.Context, fixedTree string) (string, error) {
	fixedTree, err := filepath.Abs(fixedTree)
	if err != nil {
		return "", fmt.Errorf("stock: %w", err)
	}
	work, err := os.MkdirTemp(p.base, "difftree-")
	if err != nil {
		return "", fmt.Errorf("stock: %w", err)
	}
	defer os.RemoveAll(work)
	if out, err := run(ctx, work, nil, "dpkg-source", "--no-check", "-x", "--skip-patches", p.dsc, "a"); err != nil {
		return "", fmt.Errorf("stock: dpkg-source -x %s: %s", p.dsc, lastLine(out, err))
	}
	drops := slices.Clone(p.opts.DropPatches)
	if err := p.applySeries(ctx, filepath.Join(work, "a"), drops); err != nil {
		return "", err
	}
	if err := os.Symlink(fixedTree, filepath.Join(work, "b")); err != nil {
		return "", fmt.Errorf("stock: %w", err)
	}
	// Left aside: quilt's and git's own data, and the backups and rejects
	// that patch leaves.
	cmd := exec.CommandContext(ctx, "diff", "-ruN", "-x", ".pc", "-x", ".git", "-x", "*.orig", "-x", "*.rej", "a", "b")
	cmd.Dir = work
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	diff, err := cmd.Output()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return "", fmt.Errorf("stock: %s is the unfixed source of %s %s: it holds no fix", fixedTree, p.Package.Source, p.srcVersion)
	case errors.As(err, &exit) && exit.ExitCode() == 1:
	default:
		return "", fmt.Errorf("stock: diff against %s: %v %s", fixedTree, err, strings.TrimSpace(stderr.String()))
	}
	if bytes.Contains(diff, []byte("\nBinary files ")) || bytes.HasPrefix(diff, []byte("Binary files ")) {
		return "", fmt.Errorf("stock: %s differs from the source of %s %s in binary files (build outputs?): give an unbuilt source tree, or the fix as a patch", fixedTree, p.Package.Source, p.srcVersion)
	}
	// Without the files' times, the same fix gives the same patch (and
	// the same cached build).
	lines := bytes.Split(diff, []byte("\n"))
	for i, l := range lines {
		if bytes.HasPrefix(l, []byte("--- ")) || bytes.HasPrefix(l, []byte("+++ ")) {
			if tab := bytes.IndexByte(l, '\t'); tab > 0 {
				lines[i] = l[:tab]
			}
		}
	}
	diff = bytes.Join(lines, []byte("\n"))
	sum := sha256.Sum256(diff)
	dir := filepath.Join(p.base, "fix-trees")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("stock: %w", err)
	}
	out := filepath.Join(dir, hex.EncodeToString(sum[:8])+".patch")
	if err := os.WriteFile(out, diff, 0o644); err != nil {
		return "", fmt.Errorf("stock: %w", err)
	}
	p.logf("the fixed tree %s differs from the source in %d lines: %s", fixedTree, bytes.Count(diff, []byte("\n")), out)
	return out, nil
}

// applySeries applies debian/patches/series in order, leaving out drops.
func (p *Prepared) applySeries(ctx context.Context, tree string, drops []string) error {
	data, err := os.ReadFile(filepath.Join(tree, "debian", "patches", "series"))
	if errors.Is(err, fs.ErrNotExist) {
		if len(drops) > 0 {
			return fmt.Errorf("stock: %s %s has no debian/patches/series to drop %v from", p.Package.Source, p.srcVersion, drops)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("stock: %w", err)
	}
	left := map[string]bool{}
	for _, d := range drops {
		left[d] = true
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		name, level := fields[0], "-p1"
		if len(fields) > 1 && strings.HasPrefix(fields[1], "-p") {
			level = fields[1]
		}
		if left[name] {
			delete(left, name)
			p.logf("leaving out debian/patches/%s", name)
			continue
		}
		out, err := run(ctx, tree, nil, "patch", level, "--batch", "--forward", "--no-backup-if-mismatch", "--reject-file=-", "-i", filepath.Join("debian", "patches", name))
		var exit *exec.ExitError
		switch {
		case err == nil:
		case len(drops) > 0 && errors.As(err, &exit) && exit.ExitCode() == 1:
			// Some hunks did not apply because a left-out patch came
			// before them (a changelog entry, say). The rest is applied;
			// whether the result is the installed program is for the
			// proof to say, byte by byte.
			p.logf("debian/patches/%s: some hunks did not apply once patches were left out (%s); the proof decides", name, rejectedFiles(out))
		default:
			return fmt.Errorf("stock: debian/patches/%s does not apply: %s", name, lastLine(out, err))
		}
	}
	if len(left) > 0 {
		var names []string
		for n := range left {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("stock: --drop-patch %s: not in debian/patches/series of %s %s", strings.Join(names, ", "), p.Package.Source, p.srcVersion)
	}
	return nil
}

// rejectedFiles names the files of patch's output whose hunks failed.
func rejectedFiles(out string) string {
	var files []string
	cur := ""
	for _, line := range strings.Split(out, "\n") {
		if f, ok := strings.CutPrefix(line, "patching file "); ok {
			cur = f
		}
		if (strings.Contains(line, "FAILED") || strings.Contains(line, "ignored")) && cur != "" && (len(files) == 0 || files[len(files)-1] != cur) {
			files = append(files, cur)
		}
	}
	if len(files) == 0 {
		return "see the build log"
	}
	return strings.Join(files, ", ")
}

// build runs a command of the build in dir: on the host, or in the build
// root (dir is then a path inside it).
func (p *Prepared) build(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	root := p.opts.BuildRoot
	if root == "" {
		return run(ctx, dir, env, name, args...)
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		return "", fmt.Errorf("stock: %s is outside the build root %s", dir, root)
	}
	cmd := chrootArgs(root, "/"+rel, env, name, args...)
	return run(ctx, "", nil, cmd[0], cmd[1:]...)
}

// buildDeps installs missing build dependencies when running as root.
func (p *Prepared) buildDeps(ctx context.Context, tree string) error {
	out, err := p.build(ctx, tree, nil, "dpkg-checkbuilddeps")
	if err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("stock: build dependencies of %s are missing (%s); run as root or install them with apt-get build-dep", p.Package.Source, lastLine(out, err))
	}
	p.logf("installing the build dependencies of %s (apt-get build-dep)", p.Package.Source)
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	if out, err := p.build(ctx, tree, env, "apt-get", "-o", "DPkg::Lock::Timeout=300", "-o", "Dpkg::Use-Pty=0", "build-dep", "-y", "-q", "./"); err != nil {
		return fmt.Errorf("stock: apt-get build-dep %s: %s", p.Package.Source, lastLine(out, err))
	}
	return nil
}

// findModules lists the ELF files named name in tree, shortest path first.
func findModules(tree, name string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && d.Name() == name {
			if f, err := elf.Open(path); err == nil {
				f.Close()
				out = append(out, path)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stock: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) < len(out[j]) || len(out[i]) == len(out[j]) && out[i] < out[j] })
	return out, nil
}

func run(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return buf.String(), err
}

// lastLine is the last non-empty line of a command's output, or err.
func lastLine(out string, err error) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return err.Error()
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_', r == '+':
			return r
		}
		return '_'
	}, s)
}
