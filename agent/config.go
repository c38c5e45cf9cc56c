// Package agent is hotpatchd, the on-host agent: it keeps the patches of a
// directory applied to every matching process (also those started later),
// watches the health of patched processes and rolls a patch back when it
// hurts them, and records every step as an event. See docs/agent.md.
package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the agent's configuration: the YAML file (see
// packaging/hotpatchd.yaml), overridden by flags.
type Config struct {
	// PatchDir holds the desired state: every *.hpatch file in it is kept
	// applied; removing one reverts it. Optional when Server is set.
	PatchDir string `yaml:"patch_dir"`
	// StateDir keeps the agent's own state (bad patches, copies of the
	// patches it manages, health watches) and the event log.
	StateDir string `yaml:"state_dir"`
	// Trust lists the public key files a patch must be signed by;
	// /etc/hotpatch/trusted/*.pub are trusted too.
	Trust []string `yaml:"trust"`
	// PIDNamespace, if set (a path such as /proc/PID/ns/pid), limits the
	// agent to the processes of that PID namespace: several agents on one
	// machine then act as separate hosts (the tests do this).
	PIDNamespace string `yaml:"pid_namespace"`
	// Timeout bounds each apply's wait for busy functions.
	Timeout Duration `yaml:"timeout"`
	// Rescan is how often every process is looked at again, to catch
	// libraries loaded with dlopen and anything an event missed.
	Rescan Duration `yaml:"rescan"`
	// Retry is the first delay before a busy or failed apply is tried
	// again (it doubles up to 10 minutes).
	Retry    Duration `yaml:"retry"`
	Health   Health   `yaml:"health"`
	Fallback Fallback `yaml:"fallback"`
	// MetricsListen, if set, serves Prometheus metrics at /metrics
	// (a loopback address such as 127.0.0.1:9464).
	MetricsListen string `yaml:"metrics_listen"`
	// Quiet stops the agent from printing events to stdout (they always
	// go to the event log).
	Quiet bool `yaml:"quiet"`

	// Server, if set (https://HOST:PORT), enrolls the agent with
	// hotpatch-server: the patches the server wants on this host are
	// downloaded into STATE/server/, a second patch directory, and the
	// agent reports its inventory and events. Patches are still verified
	// against Trust. Empty: offline mode, the patch directory only.
	Server string `yaml:"server"`
	// CA is the server's CA certificate (its ca.pem), needed to enroll;
	// once enrolled the agent keeps a copy in STATE/identity/.
	CA string `yaml:"ca"`
	// EnrollToken is the server's enrollment token, needed only for the
	// first start (the identity is then kept in STATE/identity/).
	// EnrollTokenFile is a file that holds it (read at enrollment): the
	// token never appears on a command line.
	EnrollToken     string `yaml:"enroll_token"`
	EnrollTokenFile string `yaml:"enroll_token_file"`
	// Name is the device's name on the server (default: the host name).
	Name string `yaml:"name"`
	// Labels are sent at enrollment; ring=NAME asks for a rollout ring,
	// which an operator approves (or the enrollment token sets).
	Labels map[string]string `yaml:"labels"`
}

// Health configures the watch that follows every apply.
type Health struct {
	// Window is how long a patched process is watched (default 10m).
	Window Duration `yaml:"window"`
	Probes []Probe  `yaml:"probes"`
}

// Probe checks a patched process during the health window: a command
// (run with sh -c, HOTPATCH_PID and HOTPATCH_PATCH in its environment,
// healthy when it exits 0) or an HTTP URL (healthy on a 2xx answer).
type Probe struct {
	// Patch is the patch id the probe is for; "" or "*" for every patch.
	Patch    string   `yaml:"patch"`
	Command  string   `yaml:"command"`
	URL      string   `yaml:"url"`
	Interval Duration `yaml:"interval"` // default 5s
	Timeout  Duration `yaml:"timeout"`  // default 5s
}

// Fallback is what to do for a process that cannot be patched (a busy
// function that never returns, a change the engine refuses): run a
// restart command, inside a maintenance window.
type Fallback struct {
	// Command is run with sh -c and HOTPATCH_PID, HOTPATCH_EXE and
	// HOTPATCH_PATCH in its environment, e.g.
	// "systemctl restart $(ps -o unit= -p $HOTPATCH_PID)". Empty: no
	// fallback.
	Command string `yaml:"command"`
	// Window is the daily maintenance window, "HH:MM-HH:MM" in local
	// time (it may wrap past midnight); empty means any time.
	Window string `yaml:"window"`
	// After is how many busy refusals in a row a process gets before the
	// fallback (default 3); a function that never returns goes at once.
	After int `yaml:"after"`
}

// Duration is a time.Duration written as "5s", "10m" in the config file.
type Duration time.Duration

// UnmarshalYAML reads a duration such as "1m30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (say 5s, 10m)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// LoadConfig reads a config file. Unknown keys are an error, so a typo
// does not pass silently.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, fmt.Errorf("%s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return &c, nil
}

// setDefaults fills what the config leaves out and checks the rest.
func (c *Config) setDefaults() error {
	if c.PatchDir == "" && c.Server == "" {
		return errors.New("no patch directory: give --patch-dir or patch_dir in the config (or --server to enroll with hotpatch-server)")
	}
	if c.StateDir == "" {
		return errors.New("no state directory: give --state or state_dir in the config")
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(5 * time.Second)
	}
	if c.Rescan == 0 {
		c.Rescan = Duration(5 * time.Second)
	}
	if c.Retry == 0 {
		c.Retry = Duration(10 * time.Second)
	}
	if c.Health.Window == 0 {
		c.Health.Window = Duration(10 * time.Minute)
	}
	for i := range c.Health.Probes {
		p := &c.Health.Probes[i]
		if (p.Command == "") == (p.URL == "") {
			return fmt.Errorf("health probe %d: give either a command or a url", i+1)
		}
		if p.Interval == 0 {
			p.Interval = Duration(5 * time.Second)
		}
		if p.Timeout == 0 {
			p.Timeout = Duration(5 * time.Second)
		}
	}
	if c.Fallback.After == 0 {
		c.Fallback.After = 3
	}
	if _, _, err := parseWindow(c.Fallback.Window); err != nil {
		return fmt.Errorf("fallback window: %v", err)
	}
	return nil
}

// parseWindow reads "HH:MM-HH:MM" into minutes of the day; "" is the
// whole day.
func parseWindow(s string) (from, to int, err error) {
	if s == "" {
		return 0, 24 * 60, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not HH:MM-HH:MM", s)
	}
	if from, err = minuteOfDay(a); err == nil {
		to, err = minuteOfDay(b)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%q is not HH:MM-HH:MM", s)
	}
	return from, to, nil
}

func minuteOfDay(s string) (int, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh*60+mm > 24*60 {
		return 0, fmt.Errorf("bad time %q", s)
	}
	return hh*60 + mm, nil
}

// inWindow reports whether t falls in the daily window s.
func inWindow(s string, t time.Time) bool {
	from, to, err := parseWindow(s)
	if err != nil {
		return false
	}
	m := t.Hour()*60 + t.Minute()
	if from <= to {
		return m >= from && m < to
	}
	return m >= from || m < to // wraps past midnight
}
