package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Event is one step of the agent, as one JSON line of the event log.
type Event struct {
	Time time.Time `json:"time"`
	// Type names the step: started, stopped, patch_loaded, patch_refused,
	// patch_damaged, patch_removed, patch_lost, apply_started, applied, apply_failed,
	// busy, revert_started, reverted, revert_failed, crash, probe_failed,
	// rolled_back, fallback, fallback_failed, proc_unreadable,
	// state_failed, state_rebuilt, events_lost; enrolled: enrolled, server_refused, download_failed,
	// patch_overridden.
	Type    string `json:"type"`
	PID     int    `json:"pid,omitempty"`
	Exe     string `json:"exe,omitempty"`
	Patch   string `json:"patch,omitempty"`
	Version uint32 `json:"version,omitempty"`
	File    string `json:"file,omitempty"`
	// Digest is the SHA-256 of the patch file a rollback judged bad (so
	// a rebuilt state can keep it off).
	Digest   string `json:"digest,omitempty"`
	PausedUS int64  `json:"paused_us,omitempty"`
	// Functions is how many functions an apply redirected.
	Functions int `json:"functions,omitempty"`
	// Crash details: the fatal signal, the faulting address and
	// instruction pointer (from the kernel log, when it has them), and the
	// patched function the instruction pointer lies in, if any.
	Signal   string `json:"signal,omitempty"`
	Fault    string `json:"fault_addr,omitempty"`
	IP       string `json:"ip,omitempty"`
	Function string `json:"function,omitempty"`
	Error    string `json:"error,omitempty"`
	Message  string `json:"message,omitempty"`
}

// String renders an event as one line for people.
func (e Event) String() string {
	s := e.Time.Format("2006-01-02T15:04:05.000Z07:00") + " " + e.Type
	add := func(k, v string) {
		if v != "" {
			s += " " + k + "=" + v
		}
	}
	if e.PID != 0 {
		add("pid", fmt.Sprint(e.PID))
	}
	add("exe", e.Exe)
	add("patch", e.Patch)
	add("file", e.File)
	if e.PausedUS != 0 {
		add("paused", fmt.Sprintf("%dµs", e.PausedUS))
	}
	if e.Functions != 0 {
		add("functions", fmt.Sprint(e.Functions))
	}
	add("signal", e.Signal)
	add("fault", e.Fault)
	add("ip", e.IP)
	add("function", e.Function)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Error != "" {
		s += ": " + e.Error
	}
	return s
}

// EventFile is the event log's name in the state directory.
const EventFile = "events.jsonl"

// eventLog appends events to the state directory's log (one JSON object a
// line, synced) and, unless quiet, prints them to stdout.
type eventLog struct {
	mu     sync.Mutex
	f      *os.File
	stdout io.Writer
	count  map[string]int // events by type, for the metrics
	// forward, if set, gets every event too (the enrolled agent's
	// outbox, sent to the server); it must not block.
	forward func(Event)
}

func openEventLog(stateDir string, stdout io.Writer) (*eventLog, error) {
	path := filepath.Join(stateDir, EventFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	// A line torn by a crash would swallow the next event: end it.
	if r, err := os.Open(path); err == nil {
		last := make([]byte, 1)
		if st, err := r.Stat(); err == nil && st.Size() > 0 {
			if _, err := r.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
				f.Write([]byte("\n"))
			}
		}
		r.Close()
	}
	return &eventLog{f: f, stdout: stdout, count: map[string]int{}}, nil
}

func (l *eventLog) add(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	line, _ := json.Marshal(e)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count[e.Type]++
	l.f.Write(append(line, '\n'))
	if !unsynced[e.Type] {
		l.f.Sync()
	}
	if l.stdout != nil {
		fmt.Fprintln(l.stdout, string(line))
	}
	if l.forward != nil {
		l.forward(e)
	}
}

// unsynced are the events written without fsync: the start of an engine
// call only matters while the process it is about lives, and a crash of
// the machine ends that process too; against the agent's own death (the
// case it is for) the page cache is enough. An fsync before every apply
// would slow a burst of new processes down for nothing.
var unsynced = map[string]bool{"apply_started": true, "revert_started": true}

func (l *eventLog) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.count))
	for k, v := range l.count {
		out[k] = v
	}
	return out
}

func (l *eventLog) close() error { return l.f.Close() }

// ReadEvents calls fn for every event in the log of stateDir, in order.
// With follow, it then waits for new events until ctx is done. A line
// that is not an event (a torn last line after a crash) is skipped.
func ReadEvents(ctx context.Context, stateDir string, follow bool, fn func(Event) error) error {
	f, err := os.Open(filepath.Join(stateDir, EventFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no event log in %s (has hotpatchd run with --state %s?)", stateDir, stateDir)
		}
		return err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var partial []byte
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			line = append(partial, line...)
			partial = nil
			var e Event
			if json.Unmarshal(line, &e) == nil && e.Type != "" {
				if err := fn(e); err != nil {
					return err
				}
			}
			continue
		}
		partial = append(partial, line...)
		if err != nil && err != io.EOF {
			return err
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}
