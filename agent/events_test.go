package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReadEventsFollow: with follow, events appended later are delivered,
// also one whose line was still being written when it was first read.
func TestReadEventsFollow(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, EventFile)
	if err := os.WriteFile(path, []byte(`{"time":"2026-12-01T05:00:00Z","type":"started"}`+"\n"+`{"time":"2026-12-01T05:00:01Z","ty`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan Event, 4)
	done := make(chan error, 1)
	go func() {
		done <- ReadEvents(ctx, dir, true, func(e Event) error { got <- e; return nil })
	}()
	if e := <-got; e.Type != "started" {
		t.Fatalf("first event %+v", e)
	}
	time.Sleep(200 * time.Millisecond)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`pe":"applied","pid":7}` + "\n" + `{"time":"2026-12-01T05:00:02Z","type":"reverted","pid":7}` + "\n")
	f.Close()
	for _, want := range []string{"applied", "reverted"} {
		select {
		case e := <-got:
			if e.Type != want || e.PID != 7 {
				t.Errorf("got %+v, want %s of pid 7", e, want)
			}
		case <-ctx.Done():
			t.Fatalf("no %s event", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ReadEvents: %v", err)
	}
}
