package agent

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/server"
)

// TestEventTypesKnownToServer: every event type the agent writes is one the
// server records as such. An unknown type is recorded as unknown_event and
// counts for nothing (a crash the server cannot see would not halt a
// rollout), so a new type must be added on both sides.
func TestEventTypesKnownToServer(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	typ := regexp.MustCompile(`Type:\s*"([a-z_]+)"`)
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range typ.FindAllStringSubmatch(string(src), -1) {
			seen++
			if !server.KnownDeviceEventType(m[1]) {
				t.Errorf("%s: event type %q is not known to the server (server/handlers.go deviceEventTypes)", f, m[1])
			}
		}
	}
	if seen < 20 {
		t.Fatalf("found only %d event types in the agent's sources; the pattern no longer matches how events are written", seen)
	}
}
