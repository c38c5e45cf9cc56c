package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/agent"
)

// writeEvents writes an event log the way hotpatchd does: one JSON object
// a line; torn is a last line cut short (the agent killed mid-write).
func writeEvents(t *testing.T, dir string, evs []agent.Event, torn string) {
	t.Helper()
	var b bytes.Buffer
	for _, e := range evs {
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	b.WriteString(torn)
	if err := os.WriteFile(filepath.Join(dir, agent.EventFile), b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestEvents reads an agent's event log as text and JSON; a torn last
// line is skipped; a missing log is a one-line error naming the directory.
func TestEvents(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 12, 1, 5, 0, 0, 0, time.UTC)
	evs := []agent.Event{
		{Time: at, Type: "applied", PID: 42, Exe: "/usr/sbin/ledger", Patch: "ledger-memo", PausedUS: 310, Functions: 2},
		{Time: at.Add(time.Second), Type: "crash", PID: 42, Patch: "ledger-memo", Signal: "SIGSEGV", Fault: "0x0", IP: "0x55550000101d", Function: "check_memo", Message: "in the patch's code"},
	}
	writeEvents(t, dir, evs, `{"time":"2026-12-01T05:00:02Z","type":"rol`)
	code, out, errOut := run(t, "events", "--state", dir)
	if code != 0 {
		t.Fatalf("events: %d %s", code, errOut)
	}
	want := "2026-12-01T05:00:00.000Z applied pid=42 exe=/usr/sbin/ledger patch=ledger-memo paused=310µs functions=2\n" +
		"2026-12-01T05:00:01.000Z crash pid=42 patch=ledger-memo signal=SIGSEGV fault=0x0 ip=0x55550000101d function=check_memo: in the patch's code\n"
	if out != want {
		t.Errorf("events text:\n%s\nwant:\n%s", out, want)
	}
	code, out, _ = run(t, "events", "--state", dir, "--json")
	var got []agent.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e agent.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events --json line %q: %v", line, err)
		}
		got = append(got, e)
	}
	if code != 0 || len(got) != 2 || got[1].Function != "check_memo" || !got[0].Time.Equal(at) {
		t.Errorf("events --json: %d %+v", code, got)
	}
	code, _, errOut = run(t, "events", "--state", filepath.Join(dir, "nope"))
	if code != 1 || !strings.Contains(errOut, "no event log in") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("missing log: %d %q", code, errOut)
	}
}
