package stock

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// A build root is a minimal Debian system of the host's release, made
// once with debootstrap (--variant=buildd: the essential packages and
// build-essential) and the host's own apt sources, so that its package
// versions are the host's (same point release, same security updates).
// Builds run in it through chroot, in a private mount namespace that
// holds its /proc only while the command runs; each package's build
// dependencies are installed there, never on the host. The sources,
// trees and rebuilds live in the root's /var/cache/hotpatch/stock.

// buildRootMarker is written last when a build root is complete; it
// holds the release codename.
const buildRootMarker = ".hotpatch-build-root"

// ensureBuildRoot makes the build root dir if it is not complete yet, and
// checks that it is of the host's release.
func ensureBuildRoot(ctx context.Context, dir string, logf func(string, ...any)) error {
	codename, err := hostCodename()
	if err != nil {
		return err
	}
	if data, err := os.ReadFile(filepath.Join(dir, buildRootMarker)); err == nil {
		if got := strings.TrimSpace(string(data)); got != codename {
			return fmt.Errorf("stock: the build root %s is Debian %s, the host is %s; give a build root of the host's release", dir, got, codename)
		}
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("stock: making the build root %s needs root (debootstrap, chroot)", dir)
	}
	// One command makes a root at a time; a second waits, then finds it.
	unlock, err := lockDir(filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, buildRootMarker)); err == nil {
		return ensureBuildRoot(ctx, dir, logf)
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fmt.Errorf("stock: making a build root needs debootstrap (apt-get install debootstrap): %w", err)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("stock: %s is not empty and not a build root hotpatch made; name an empty or missing directory", dir)
	}
	mirror := hostMirror()
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("stock: %w", err)
	}
	start := time.Now()
	logf("making the build root %s: debootstrap --variant=buildd %s from %s", dir, codename, mirror)
	if out, err := run(ctx, "", nil, "debootstrap", "--variant=buildd", codename, tmp, mirror); err != nil {
		return fmt.Errorf("stock: debootstrap %s into %s: %s", codename, tmp, lastLine(out, err))
	}
	// The host's apt sources (deb and deb-src lines, updates and
	// security) and name resolution.
	if err := os.Remove(filepath.Join(tmp, "etc", "apt", "sources.list")); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("stock: %w", err)
	}
	var copies [][2]string
	if _, err := os.Stat("/etc/apt/sources.list"); err == nil {
		copies = append(copies, [2]string{"/etc/apt/sources.list", "etc/apt/sources.list"})
	}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		files, _ := filepath.Glob(pat)
		for _, f := range files {
			copies = append(copies, [2]string{f, filepath.Join("etc", "apt", "sources.list.d", filepath.Base(f))})
		}
	}
	copies = append(copies, [2]string{"/etc/resolv.conf", "etc/resolv.conf"})
	for _, c := range copies {
		if err := copyFile(c[0], filepath.Join(tmp, c[1])); err != nil {
			return fmt.Errorf("stock: build root: %w", err)
		}
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	for _, args := range [][]string{
		{"apt-get", "-q", "update"},
		{"apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", "dist-upgrade"},
	} {
		cmd := chrootArgs(tmp, "/", env, args[0], args[1:]...)
		if out, err := run(ctx, "", nil, cmd[0], cmd[1:]...); err != nil {
			return fmt.Errorf("stock: build root: %s: %s", strings.Join(args, " "), lastLine(out, err))
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, buildRootMarker), []byte(codename+"\n"), 0o644); err != nil {
		return fmt.Errorf("stock: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("stock: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("stock: %w", err)
	}
	logf("build root made in %s", time.Since(start).Round(time.Second))
	return nil
}

// chrootArgs is the command line that runs name in the build root root,
// in directory inside (a path within the root), with env added: chroot
// in a private mount namespace with the root's /proc mounted, which ends
// with the command.
func chrootArgs(root, inside string, env []string, name string, args ...string) []string {
	script := `mount -t proc proc "$0/proc" && exec chroot "$0" "$@"`
	out := []string{"unshare", "--mount", "--fork", "--propagation", "private", "sh", "-c", script, root, "/usr/bin/env", "-C", inside}
	out = append(out, env...)
	out = append(out, name)
	return append(out, args...)
}

// hostCodename is the release codename of the host (VERSION_CODENAME in
// /etc/os-release).
func hostCodename() (string, error) {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return "", fmt.Errorf("stock: a build root is of the host's release: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VERSION_CODENAME="); ok {
			if v = strings.Trim(v, `"`); v != "" {
				return v, nil
			}
		}
	}
	return "", fmt.Errorf("stock: /etc/os-release names no VERSION_CODENAME; a build root needs the host's Debian release")
}

// hostMirror is the first Debian archive the host's apt sources name
// (deb.debian.org when none is found).
func hostMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "URIs:"); ok {
				for _, u := range strings.Fields(v) {
					if strings.HasSuffix(strings.TrimRight(u, "/"), "/debian") {
						return u
					}
				}
			}
		}
	}
	return "http://deb.debian.org/debian"
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
