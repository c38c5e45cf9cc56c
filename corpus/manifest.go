package corpus

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Project is one manifest.json: a Debian source package, the module built
// from it, how to drive it, and the fixes measured on it.
type Project struct {
	Name    string `json:"project"`
	Package string `json:"package"` // Debian source package
	Version string `json:"version"` // its version, as apt-get source takes it
	// Kind is "library" (driven by Driver, a C program linking it) or
	// "executable" (a server started with Service).
	Kind    string      `json:"kind"`
	Build   Build       `json:"build"`
	Driver  Driver      `json:"driver"`
	Service ServiceSpec `json:"service"`
	Fixes   []Fix       `json:"fixes"`

	dir string // the manifest's directory
}

// Build says how to build the module from the unpacked source package with
// the project's own build system. Commands run with sh -c in Dir (relative
// to the source root) with CFLAGS and LDFLAGS set to the corpus flags.
type Build struct {
	Dir       string   `json:"dir"`
	Configure string   `json:"configure"` // run once in the pristine tree
	Make      string   `json:"make"`      // run in every tree (and for executables, every variant)
	Shared    string   `json:"shared"`    // library: the shared object, relative to Dir
	Static    string   `json:"static"`    // library: the static archive linked into the non-PIE driver
	Exe       string   `json:"exe"`       // executable: the server binary, relative to Dir
	Include   []string `json:"include"`   // library: header directories, relative to Dir
	Libs      []string `json:"libs"`      // extra libraries for the static driver
}

// Driver is the C program, linking the library, that serves requests on a
// loopback socket (see driver/harness.c).
type Driver struct {
	Source string `json:"source"` // relative to the manifest
	Load   string `json:"load"`   // the operation the load generator repeats
}

// ServiceSpec says how to start an executable and talk to it.
type ServiceSpec struct {
	Args     []string `json:"args"`     // {port} is replaced by a free loopback port
	Protocol string   `json:"protocol"` // "dns"
	Load     string   `json:"load"`     // the request the load generator repeats
}

// Fix is one security fix of the project.
type Fix struct {
	ID    string   `json:"id"`
	CVEs  []string `json:"cves"`
	Title string   `json:"title"`
	// Patch is a file of the package's debian/patches series ("debian/patches/X"),
	// or a file next to the manifest when Revert is set.
	Patch string `json:"patch"`
	// Revert: the fix is already in this version of the package; orig is the
	// package with Patch applied in reverse, fixed is the package as shipped.
	Revert    bool     `json:"revert"`
	Functions []string `json:"functions"` // what the fix changes, as read in the patch
	Variants  []string `json:"variants"`  // "pie" and/or "nopie"
	Probe     string   `json:"probe"`     // the request that shows the vulnerable behaviour
	// Vulnerable and Fixed describe the probe's answer on each build; the
	// runner measures both builds and requires the answers to differ.
	Vulnerable string `json:"vulnerable"`
	Fixed      string `json:"fixed"`
	Expect     string `json:"expect"` // "patch" or "refuse"
	Reason     string `json:"reason"` // for "refuse": why the right answer is a refusal
}

// Variants of a build.
const (
	PIE   = "pie"
	NoPIE = "nopie"
)

// LoadAll reads every manifest.json in the directories below root.
func LoadAll(root string) ([]*Project, error) {
	ms, err := filepath.Glob(filepath.Join(root, "*", "manifest.json"))
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("no */manifest.json under %s", root)
	}
	slices.Sort(ms)
	var ps []*Project
	for _, m := range ms {
		p, err := LoadProject(m)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// LoadProject reads and checks one manifest.
func LoadProject(path string) (*Project, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p Project
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p.dir = filepath.Dir(path)
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &p, nil
}

// ErrManifest is wrapped by every manifest error.
var ErrManifest = errors.New("bad manifest")

func (p *Project) check() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: %s", ErrManifest, fmt.Sprintf(f, a...)) }
	if p.Name == "" || p.Package == "" || p.Version == "" {
		return bad("project, package and version are required")
	}
	switch p.Kind {
	case "library":
		if p.Build.Shared == "" || p.Build.Static == "" || p.Driver.Source == "" || p.Driver.Load == "" {
			return bad("a library needs build.shared, build.static, driver.source and driver.load")
		}
		if _, err := os.Stat(filepath.Join(p.dir, p.Driver.Source)); err != nil {
			return bad("driver: %v", err)
		}
	case "executable":
		if p.Build.Exe == "" || p.Service.Protocol == "" || p.Service.Load == "" {
			return bad("an executable needs build.exe, service.protocol and service.load")
		}
	default:
		return bad("kind %q: want library or executable", p.Kind)
	}
	if p.Build.Make == "" {
		return bad("build.make is required")
	}
	ids := map[string]bool{}
	for _, f := range p.Fixes {
		if f.ID == "" || ids[f.ID] {
			return bad("fix id %q empty or repeated", f.ID)
		}
		ids[f.ID] = true
		if f.Expect != "patch" && f.Expect != "refuse" {
			return bad("%s: expect %q: want patch or refuse", f.ID, f.Expect)
		}
		if f.Expect == "refuse" && f.Reason == "" {
			return bad("%s: a refusal needs a reason", f.ID)
		}
		if f.Probe == "" {
			return bad("%s: probe is required", f.ID)
		}
		if len(f.Variants) == 0 {
			return bad("%s: no variants", f.ID)
		}
		for _, v := range f.Variants {
			if v != PIE && v != NoPIE {
				return bad("%s: variant %q", f.ID, v)
			}
		}
		if f.Revert {
			if _, err := os.Stat(filepath.Join(p.dir, f.Patch)); err != nil {
				return bad("%s: %v", f.ID, err)
			}
		} else if !strings.HasPrefix(f.Patch, "debian/patches/") {
			return bad("%s: patch %q: want debian/patches/NAME, or revert with a file of the corpus", f.ID, f.Patch)
		}
	}
	return nil
}

// Dir is the directory of the manifest.
func (p *Project) Dir() string { return p.dir }
