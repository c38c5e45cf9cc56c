package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestExampleConfig loads the documented config file.
func TestExampleConfig(t *testing.T) {
	c, err := LoadConfig("../packaging/hotpatchd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		PatchDir: "/etc/hotpatch/patches", StateDir: "/var/lib/hotpatchd", Trust: []string{"/etc/hotpatch/release.pub"},
		Timeout: Duration(5 * time.Second), Rescan: Duration(5 * time.Second), Retry: Duration(10 * time.Second),
		Health: Health{Window: Duration(10 * time.Minute), Probes: []Probe{{Patch: "*", Command: "kill -0 $HOTPATCH_PID",
			Interval: Duration(5 * time.Second), Timeout: Duration(5 * time.Second)}}},
		Fallback: Fallback{Window: "02:00-04:00", After: 3},
	}
	if diff := cmp.Diff(want, *c); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "patch_dir: /p\nstate_dir: /s\npatchdir: /x\n", "field patchdir not found"},
		{"bad duration", "patch_dir: /p\nstate_dir: /s\ntimeout: five\n", `"five" is not a duration`},
		{"no patch dir", "state_dir: /s\n", "no patch directory"},
		{"probe without check", "patch_dir: /p\nstate_dir: /s\nhealth: {probes: [{patch: x}]}\n", "give either a command or a url"},
		{"bad window", "patch_dir: /p\nstate_dir: /s\nfallback: {window: '2-4'}\n", "not HH:MM-HH:MM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if err == nil {
				err = c.setDefaults()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestInWindow(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 12, 1, h, m, 0, 0, time.Local) }
	tests := []struct {
		window string
		t      time.Time
		want   bool
	}{
		{"", at(13, 0), true},
		{"02:00-04:00", at(2, 0), true},
		{"02:00-04:00", at(3, 59), true},
		{"02:00-04:00", at(4, 0), false},
		{"22:00-02:00", at(23, 30), true},
		{"22:00-02:00", at(1, 0), true},
		{"22:00-02:00", at(12, 0), false},
	}
	for _, tt := range tests {
		if got := inWindow(tt.window, tt.t); got != tt.want {
			t.Errorf("inWindow(%q, %s) = %v", tt.window, tt.t.Format("15:04"), got)
		}
	}
}
