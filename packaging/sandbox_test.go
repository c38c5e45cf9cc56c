package packaging

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unit is the [Service] section of a systemd unit file: every value of
// every key, in order.
type unit struct {
	path    string
	service map[string][]string
}

func readUnit(t *testing.T, path string) *unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := &unit{path: path, service: map[string][]string{}}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not KEY=VALUE: %q", path, line)
		}
		if section == "Service" {
			k = strings.TrimSpace(k)
			u.service[k] = append(u.service[k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// last returns the last value of key, or "".
func (u *unit) last(key string) string {
	v := u.service[key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// list returns the space-separated words of every value of key; an empty
// value resets the list, as systemd does.
func (u *unit) list(key string) []string {
	var out []string
	for _, v := range u.service[key] {
		if v == "" {
			out = nil
			continue
		}
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// execStart is the unit's command line (our units quote nothing).
func (u *unit) execStart(t *testing.T) []string {
	t.Helper()
	v := u.service["ExecStart"]
	if len(v) != 1 || strings.ContainsAny(v[0], `"'\$%`) {
		t.Fatalf("%s: want one ExecStart without quotes or specifiers, got %q", u.path, v)
	}
	return strings.Fields(strings.TrimLeft(v[0], "-@+!:"))
}

// capabilities is the bounding set: lower-case names without "cap_", as
// setpriv takes them. An unset CapabilityBoundingSet is every capability
// (nil, ok=false).
func (u *unit) capabilities(t *testing.T, key string) (caps []string, set bool) {
	t.Helper()
	if _, set = u.service[key]; !set {
		return nil, false
	}
	for _, c := range u.list(key) {
		if strings.HasPrefix(c, "~") {
			t.Fatalf("%s: %s=~… (an inverted set) is not supported by this test", u.path, key)
		}
		caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return caps, true
}

func yes(v string) bool {
	switch v {
	case "yes", "true", "on", "1":
		return true
	}
	return false
}

// sandbox returns a command that runs argv as the unit would run it:
// in a private mount namespace set up as the unit's ProtectSystem,
// ProtectHome, ReadOnlyPaths, ReadWritePaths, StateDirectory and
// PrivateTmp say, then as its User/Group with its CapabilityBoundingSet,
// AmbientCapabilities and NoNewPrivileges (setpriv). Settings the units
// use and this function does not know fail the test, so that a new line
// in a unit cannot go untested.
//
// overlays are directories (/etc, /usr/bin, /var/lib) that get a private
// writable layer in dir before anything else: the unit test installs the
// files there as the package would, and the machine stays untouched.
func (u *unit) sandbox(t *testing.T, overlays map[string]string, argv []string) *exec.Cmd {
	t.Helper()
	known := map[string]bool{
		"Type": true, "ExecStart": true, "KillMode": true, "Restart": true, "RestartSec": true,
		"StateDirectory": true, "StateDirectoryMode": true, "User": true, "Group": true,
		"CapabilityBoundingSet": true, "AmbientCapabilities": true, "NoNewPrivileges": true,
		"ProtectSystem": true, "ProtectHome": true, "ReadWritePaths": true, "ReadOnlyPaths": true,
		"PrivateTmp": true,
	}
	for k := range u.service {
		if !known[k] {
			t.Fatalf("%s: %s= is not applied by this test's sandbox: teach sandbox() what it does", u.path, k)
		}
	}
	var sh strings.Builder
	sh.WriteString("set -e\nmount --make-rprivate /\n")
	for dir, upper := range overlays {
		work := upper + ".work"
		fmt.Fprintf(&sh, "mkdir -p %s %s\nmount -t overlay overlay -o lowerdir=%s,upperdir=%s,workdir=%s %s\n", upper, work, dir, upper, work, dir)
	}
	user, group := u.last("User"), u.last("Group")
	for _, d := range u.list("StateDirectory") {
		mode := u.last("StateDirectoryMode")
		if mode == "" {
			mode = "0755"
		}
		p := filepath.Join("/var/lib", d)
		fmt.Fprintf(&sh, "mkdir -p %s\nchmod %s %s\n", p, mode, p)
		if user != "" {
			fmt.Fprintf(&sh, "chown %s:%s %s\n", user, group, p)
		}
	}
	// ProtectSystem=strict: every mount read-only except the API file
	// systems; full: /usr, /boot, /efi and /etc; yes: /usr, /boot, /efi.
	switch ps := u.last("ProtectSystem"); ps {
	case "strict":
		sh.WriteString(`for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
	case "$m" in /dev|/dev/*|/proc|/proc/*|/sys|/sys/*) continue;; esac
	mount -o remount,bind,ro "$m" 2>/dev/null || true
done
touch /usr/.hotpatch-ro-check 2>/dev/null && { echo "sandbox: / is still writable" >&2; exit 1; }
`)
	case "full", "yes", "true":
		dirs := "/usr /boot /efi"
		if ps == "full" {
			dirs += " /etc"
		}
		fmt.Fprintf(&sh, "for m in %s; do [ -d $m ] && mount --bind $m $m && mount -o remount,bind,ro $m; done || true\n", dirs)
	case "", "no", "false":
	default:
		t.Fatalf("%s: ProtectSystem=%s is not applied by this test", u.path, ps)
	}
	switch ph := u.last("ProtectHome"); ph {
	case "read-only":
		sh.WriteString("for m in /home /root /run/user; do [ -d $m ] && mount --bind $m $m && mount -o remount,bind,ro $m; done || true\n")
	case "yes", "true", "tmpfs":
		sh.WriteString("for m in /home /root /run/user; do [ -d $m ] && mount -t tmpfs -o ro,mode=0755 tmpfs $m; done || true\n")
	case "", "no", "false":
	default:
		t.Fatalf("%s: ProtectHome=%s is not applied by this test", u.path, ph)
	}
	bind := func(p, mode string) {
		optional := strings.HasPrefix(p, "-")
		p = strings.TrimPrefix(p, "-")
		test := ""
		if optional {
			test = fmt.Sprintf("[ -e %s ] && ", p)
		}
		fmt.Fprintf(&sh, "%s{ mount --bind %s %s && mount -o remount,bind,%s %s; } %s\n", test, p, p, mode, p, map[bool]string{true: "|| true", false: ""}[optional])
	}
	for _, p := range u.list("ReadOnlyPaths") {
		bind(p, "ro")
	}
	for _, p := range u.list("ReadWritePaths") {
		bind(p, "rw")
	}
	for _, d := range u.list("StateDirectory") {
		bind(filepath.Join("/var/lib", d), "rw")
	}
	if yes(u.last("PrivateTmp")) {
		sh.WriteString("mount -t tmpfs -o mode=1777 tmpfs /tmp\nmount -t tmpfs -o mode=1777 tmpfs /var/tmp\n")
	}
	sp := []string{"setpriv"}
	if user != "" {
		sp = append(sp, "--reuid", user, "--regid", group, "--init-groups")
	}
	if caps, set := u.capabilities(t, "CapabilityBoundingSet"); set {
		b := "-all"
		for _, c := range caps {
			b += ",+" + c
		}
		sp = append(sp, "--bounding-set", b)
	}
	if amb, _ := u.capabilities(t, "AmbientCapabilities"); len(amb) > 0 {
		l := ""
		for _, c := range amb {
			l += ",+" + c
		}
		sp = append(sp, "--inh-caps", l[1:], "--ambient-caps", l[1:])
	}
	if yes(u.last("NoNewPrivileges")) {
		sp = append(sp, "--no-new-privs")
	}
	sh.WriteString("exec")
	for _, a := range append(append(sp, "--"), argv...) {
		sh.WriteString(" '" + strings.ReplaceAll(a, "'", `'\''`) + "'")
	}
	sh.WriteString("\n")
	return exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", sh.String())
}
