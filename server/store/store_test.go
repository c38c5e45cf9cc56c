package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/internal/pgtest"
	"github.com/hotpatch/hotpatch/server/api"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Stop()
	os.Exit(code)
}

// TestStore runs the same checks on SQLite and PostgreSQL: migrations
// apply once (a second open changes nothing), the change counter starts
// above zero and grows, a rollout updated from a stale read is refused.
func TestStore(t *testing.T) {
	eachDB(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s, err := Open(url)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if s, err = Open(url); err != nil { // migrations again: nothing to do
			t.Fatal(err)
		}
		defer s.Close()
		n, err := s.Change(ctx)
		if err != nil || n < 1 {
			t.Fatalf("change counter %d, %v", n, err)
		}
		if m, err := s.BumpChange(ctx); err != nil || m != n+1 {
			t.Errorf("bump: %d, %v; want %d", m, err, n+1)
		}
		info := api.PatchInfo{SHA256: "aa", ID: "p", Version: 1, Published: time.Now()}
		if err := s.AddPatch(ctx, info, []byte("file")); err != nil {
			t.Fatal(err)
		}
		if err := s.AddPatch(ctx, info, []byte("file")); err != nil {
			t.Errorf("publishing the same file twice: %v", err)
		}
		r := Rollout{Members: map[string][]string{}}
		r.ID, r.Patch, r.State, r.Created, r.Updated = "ro-1", info, api.StateRunning, time.Now(), time.Now()
		if err := s.AddRollout(ctx, r); err != nil {
			t.Fatal(err)
		}
		prev := r.Updated
		r.Updated = prev.Add(time.Second)
		if err := s.UpdateRollout(ctx, r, prev); err != nil {
			t.Fatalf("update: %v", err)
		}
		r.Updated = prev.Add(2 * time.Second)
		if err := s.UpdateRollout(ctx, r, prev); !errors.Is(err, ErrConflict) {
			t.Errorf("update from a stale read: %v, want ErrConflict", err)
		}
		if _, err := s.Device(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing device: %v", err)
		}
	})
}

// eachDB runs a test on a fresh SQLite file and on a fresh PostgreSQL
// database, each a subtest, given the URL to Open.
func eachDB(t *testing.T, test func(t *testing.T, url string)) {
	t.Run("sqlite", func(t *testing.T) { test(t, filepath.Join(t.TempDir(), "s.db")) })
	t.Run("postgres", func(t *testing.T) { test(t, pgtest.URL(t)) })
}
