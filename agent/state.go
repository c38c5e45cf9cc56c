package agent

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/hotpatch/hotpatch/engine"
)

// persisted is the agent's state that must survive a restart (kill -9
// included). What is applied is not in it: that is read from the
// processes themselves.
type persisted struct {
	// Bad are the patches that hurt a process on this host: kept off
	// every process until their file changes.
	Bad map[string]badPatch `json:"bad"`
	// Managed are the patches the agent applied from the patch directory,
	// by id, so that one whose file disappeared while the agent was down
	// is still reverted.
	Managed map[string]managed `json:"managed"`
	// Watches are the health windows in progress.
	Watches []watch `json:"watches"`
}

type badPatch struct {
	Digest string    `json:"digest"` // of the file that was bad
	Reason string    `json:"reason"`
	PID    int       `json:"pid"`
	Time   time.Time `json:"time"`
	// Pending is set until the revert from every process that carries
	// the patch was submitted (it waits while /proc cannot be read).
	Pending bool `json:"pending,omitempty"`
}

type managed struct {
	Version uint32 `json:"version"`
	Digest  string `json:"digest"`
	// File is the patch file it was loaded from: if that file is later
	// damaged, the copy kept in STATE/patches/ stays in force.
	File string `json:"file,omitempty"`
}

// watch is one patched process under health watch.
type watch struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // the process's start time, to tell a reused pid
	Patch string `json:"patch"`
	// Applied is when the patch was applied (the most recent apply in a
	// process is charged with a crash outside every patch's code).
	Applied time.Time `json:"applied"`
	Until   time.Time `json:"until"`
	// Mapped is where the patch is mapped in the process (its memfd
	// mappings), to tell a crash in its code.
	Mapped [][2]uint64 `json:"mapped,omitempty"`
	// Code locates the patch's functions in the process, to name the one
	// a crash happened in.
	Code []engine.FuncInfo `json:"code,omitempty"`
	// nextProbe is when the probes run next (not persisted: a restart
	// probes at once).
	nextProbe time.Time
	// goneAt is when the process was first seen gone, its exit event not
	// read yet.
	goneAt time.Time
}

const stateFile = "state.json"

// tornStateError is a state.json that does not parse (a disk that lost
// the end of a write, a hand edit): the agent rebuilds the state.
type tornStateError struct{ err error }

func (e *tornStateError) Error() string { return stateFile + " does not parse: " + e.err.Error() }
func (e *tornStateError) Unwrap() error { return e.err }

func loadState(dir string) (*persisted, error) {
	st := &persisted{Bad: map[string]badPatch{}, Managed: map[string]managed{}}
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, &tornStateError{err: err}
	}
	if st.Bad == nil {
		st.Bad = map[string]badPatch{}
	}
	if st.Managed == nil {
		st.Managed = map[string]managed{}
	}
	return st, nil
}

// save writes the state atomically: a kill at any moment leaves either
// the old or the new file.
func (st *persisted) save(dir string) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}
