package corpus

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The flags of the builder's contract (README), with -O2 -g as Debian builds.
const (
	BaseCFLAGS  = "-O2 -g -ffunction-sections -fdata-sections"
	BaseLDFLAGS = "-Wl,--emit-relocs"
)

// Flags returns CFLAGS and LDFLAGS for a variant: PIE is gcc's default here
// (Debian's); the non-PIE variant compiles with -fno-pie and links -no-pie,
// as a package built without PIE hardening would. Shared objects add -fPIC
// themselves (libtool and the projects' makefiles do), which overrides -fno-pie.
func Flags(variant string) (cflags, ldflags string) {
	if variant == NoPIE {
		return BaseCFLAGS + " -fno-pie", BaseLDFLAGS + " -no-pie"
	}
	return BaseCFLAGS, BaseLDFLAGS
}

// Builder builds the trees of the corpus in a cache directory.
type Builder struct {
	Cache string    // e.g. ~/.cache/hotpatch/corpus
	Repo  string    // the repository root (driver/harness.c lives in corpus/driver)
	Log   io.Writer // progress lines
}

func (b *Builder) logf(f string, a ...any) {
	if b.Log != nil {
		fmt.Fprintf(b.Log, f+"\n", a...)
	}
}

// run runs a shell command in dir with extra environment, with a deadline;
// its output goes to a log file in the cache, named in the error.
func (b *Builder) run(dir, logName string, timeout time.Duration, env []string, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	logPath := filepath.Join(b.Cache, "logs", logName+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	lf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Run(); err != nil {
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 300 {
			tail = tail[len(tail)-300:]
		}
		return fmt.Errorf("%s: %s: %w: …%s (log %s)", logName, name, err, tail, logPath)
	}
	return nil
}

func (b *Builder) sh(dir, logName string, timeout time.Duration, env []string, script string) error {
	return b.run(dir, logName, timeout, env, "sh", "-ec", script)
}

// Source returns the pristine (no Debian patch applied), configured source
// tree of the project, fetching the source package on first use.
func (b *Builder) Source(p *Project) (string, error) {
	srcDir := filepath.Join(b.Cache, "src")
	if err := os.MkdirAll(srcDir, 0o755); err != nil {
		return "", err
	}
	ver := p.Version
	if i := strings.IndexByte(ver, ':'); i >= 0 {
		ver = ver[i+1:] // the epoch is not in file names
	}
	dsc := filepath.Join(srcDir, fmt.Sprintf("%s_%s.dsc", p.Package, ver))
	if _, err := os.Stat(dsc); err != nil {
		b.logf("%s: apt-get source --download-only %s=%s", p.Name, p.Package, p.Version)
		if err := b.run(srcDir, p.Name+"-download", 10*time.Minute, nil, "apt-get", "source", "--download-only", "-q",
			p.Package+"="+p.Version); err != nil {
			return "", fmt.Errorf("download %s=%s (deb-src lines for the main archive are needed in /etc/apt/sources.list.d): %w",
				p.Package, p.Version, err)
		}
	}
	pristine := filepath.Join(b.Cache, "build", p.Name, "pristine")
	stamp := filepath.Join(pristine, ".corpus-configured")
	if _, err := os.Stat(stamp); err == nil {
		return pristine, nil
	}
	os.RemoveAll(pristine)
	if err := os.MkdirAll(filepath.Dir(pristine), 0o755); err != nil {
		return "", err
	}
	b.logf("%s: unpack and configure", p.Name)
	if err := b.run(srcDir, p.Name+"-unpack", 5*time.Minute, nil, "dpkg-source", "--skip-patches", "-x", dsc, pristine); err != nil {
		return "", err
	}
	if p.Build.Configure != "" {
		cf, lf := Flags(PIE)
		if err := b.sh(filepath.Join(pristine, p.Build.Dir), p.Name+"-configure", 10*time.Minute,
			[]string{"CFLAGS=" + cf, "LDFLAGS=" + lf}, p.Build.Configure); err != nil {
			return "", err
		}
	}
	return pristine, os.WriteFile(stamp, nil, 0o644)
}

// Series returns the package's patch series, in order.
func (b *Builder) Series(pristine string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(pristine, "debian", "patches", "series"))
	if err != nil {
		return nil, err
	}
	var s []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = strings.TrimSpace(l[:i])
		}
		if l != "" {
			s = append(s, strings.Fields(l)[0])
		}
	}
	return s, nil
}

// Tree is one state of the source: the series applied up to Level patches,
// then Reverted (a corpus patch) applied in reverse.
type Tree struct {
	Level    int
	Reverted string // absolute path, or ""
}

func (t Tree) key() string {
	k := fmt.Sprintf("s%02d", t.Level)
	if t.Reverted != "" {
		k += "-r-" + strings.TrimSuffix(filepath.Base(t.Reverted), ".patch")
	}
	return k
}

// Trees returns the orig and fixed source states of a fix.
func (b *Builder) Trees(p *Project, f Fix, series []string) (orig, fixed Tree, err error) {
	if f.Revert {
		all := Tree{Level: len(series)}
		return Tree{Level: len(series), Reverted: filepath.Join(p.dir, f.Patch)}, all, nil
	}
	name := strings.TrimPrefix(f.Patch, "debian/patches/")
	for i, s := range series {
		if s == name {
			return Tree{Level: i}, Tree{Level: i + 1}, nil
		}
	}
	return Tree{}, Tree{}, fmt.Errorf("%w: %s: %s is not in the package's series", ErrManifest, f.ID, f.Patch)
}

// autotools inputs whose new mtime after patching would make make rerun
// autoconf or automake; they keep the pristine tree's time.
var regen = []string{"configure.ac", "Makefile.am", "configure.in", "aclocal.m4", "Makefile.in", "configure"}

// BuildTree makes the tree and builds the module in it for a variant; it
// returns the tree's build directory (the source root joined with Build.Dir).
// Libraries are built once for both variants (the static archive is non-PIE
// code, the shared object PIC); executables once per variant.
func (b *Builder) BuildTree(p *Project, pristine string, series []string, t Tree, variant string) (string, error) {
	key := t.key()
	if p.Kind == "executable" {
		key += "-" + variant
	} else {
		variant = NoPIE // the archive's objects are compiled -fno-pie; libtool adds -fPIC for the .so
	}
	root := filepath.Join(b.Cache, "build", p.Name, key)
	dir := filepath.Join(root, p.Build.Dir)
	stamp := filepath.Join(root, ".corpus-built")
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil
	}
	os.RemoveAll(root)
	b.logf("%s: build %s", p.Name, key)
	if err := b.run(filepath.Dir(root), p.Name+"-"+key+"-copy", 5*time.Minute, nil, "cp", "-a", pristine, root); err != nil {
		return "", err
	}
	for _, s := range series[:t.Level] {
		if err := b.run(root, p.Name+"-"+key+"-patch", time.Minute, nil, "patch", "-p1", "-s", "-N", "-i",
			filepath.Join(pristine, "debian", "patches", s)); err != nil {
			return "", err
		}
	}
	if t.Reverted != "" {
		if err := b.run(root, p.Name+"-"+key+"-revert", time.Minute, nil, "patch", "-p1", "-s", "-R", "-i", t.Reverted); err != nil {
			return "", err
		}
	}
	ref := filepath.Join(pristine, p.Build.Dir, "configure")
	if _, err := os.Stat(ref); err != nil {
		ref = filepath.Join(pristine, "debian", "changelog")
	}
	for _, base := range regen {
		matches, _ := filepath.Glob(filepath.Join(dir, base))
		more, _ := filepath.Glob(filepath.Join(dir, "*", base))
		for _, m := range append(matches, more...) {
			if err := b.run(root, p.Name+"-"+key+"-touch", time.Minute, nil, "touch", "-r", ref, m); err != nil {
				return "", err
			}
		}
	}
	cf, lf := Flags(variant)
	if p.Kind != "executable" {
		lf = BaseLDFLAGS // -no-pie would make gcc link the shared object as a program
	}
	env := []string{"CFLAGS=" + cf, "LDFLAGS=" + lf, "MAKEFLAGS=-j2"}
	if err := b.sh(dir, p.Name+"-"+key+"-make", 20*time.Minute, env, p.Build.Make); err != nil {
		return "", err
	}
	return dir, os.WriteFile(stamp, nil, 0o644)
}

// Driver builds the C driver of a library project against a built tree:
// for PIE, a PIE executable linked with the tree's shared object (the
// target module is the shared object); for non-PIE, a non-PIE executable
// with the static archive linked in (the target module is the executable).
func (b *Builder) Driver(p *Project, dir, key, variant string) (string, error) {
	out := filepath.Join(b.Cache, "build", p.Name, "driver-"+key+"-"+variant)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	cf, lf := Flags(variant)
	args := strings.Fields(cf)
	for _, inc := range p.Build.Include {
		args = append(args, "-I"+filepath.Join(dir, inc))
	}
	args = append(args, strings.Fields(lf)...)
	args = append(args, "-o", out+".tmp", filepath.Join(b.Repo, "corpus", "driver", "harness.c"), filepath.Join(p.dir, p.Driver.Source))
	if variant == PIE {
		args = append(args, filepath.Join(dir, p.Build.Shared))
	} else {
		args = append(args, filepath.Join(dir, p.Build.Static))
	}
	args = append(args, p.Build.Libs...)
	args = append(args, "-lpthread")
	if err := b.run(filepath.Dir(out), p.Name+"-driver-"+key+"-"+variant, 5*time.Minute, nil, "gcc", args...); err != nil {
		return "", err
	}
	return out, os.Rename(out+".tmp", out)
}

// Realpath resolves symbolic links (a shared object's soname link).
func Realpath(p string) string {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return p
	}
	return r
}
