package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// TestSaveRolloutAtomic: a rollout step, its change-counter bump and its
// audit events are stored together or not at all (here the events
// cannot be written: neither is the step, nor the bump); a second
// running rollout of a patch id is refused.
func TestSaveRolloutAtomic(t *testing.T) {
	eachDB(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s, err := Open(url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		info := api.PatchInfo{SHA256: "aa", ID: "p", Version: 1, Published: time.Now()}
		if err := s.AddPatch(ctx, info, []byte("file")); err != nil {
			t.Fatal(err)
		}
		r := Rollout{Members: map[string][]string{}}
		r.ID, r.Patch, r.State, r.Created, r.Updated = "ro-1", info, api.StateRunning, time.Now(), time.Now()
		if _, err := s.SaveRollout(ctx, r, time.Time{}, false, []api.AuditEvent{{Actor: "t", Type: "rollout_started"}}); err != nil {
			t.Fatal(err)
		}
		other := r
		other.ID = "ro-2"
		if _, err := s.SaveRollout(ctx, other, time.Time{}, false, nil); !errors.Is(err, ErrActiveRollout) {
			t.Errorf("a second running rollout of p: %v, want ErrActiveRollout", err)
		}
		before, _ := s.Change(ctx)
		if _, err := s.db.ExecContext(ctx, `ALTER TABLE events RENAME TO events_gone`); err != nil {
			t.Fatal(err)
		}
		prev := r.Updated
		r.State, r.Updated = api.StateHalted, prev.Add(time.Second)
		if _, err := s.SaveRollout(ctx, r, prev, true, []api.AuditEvent{{Actor: "t", Type: "rollout_halted"}}); err == nil {
			t.Fatal("a step whose audit event cannot be written was stored")
		}
		if _, err := s.db.ExecContext(ctx, `ALTER TABLE events_gone RENAME TO events`); err != nil {
			t.Fatal(err)
		}
		if cur, _ := s.Rollout(ctx, "ro-1"); cur.State != api.StateRunning {
			t.Errorf("the step was stored without its audit event: %s", cur.State)
		}
		if after, _ := s.Change(ctx); after != before {
			t.Errorf("the change counter moved from %d to %d for a step not stored", before, after)
		}
		n, err := s.SaveRollout(ctx, r, prev, true, []api.AuditEvent{{Actor: "t", Type: "rollout_halted"}})
		if err != nil || n != before+1 {
			t.Errorf("the step once the store works: %d, %v; want %d", n, err, before+1)
		}
		if evs, _ := s.FindEvents(ctx, EventFilter{Type: "rollout_halted"}); len(evs) != 1 {
			t.Errorf("audit events of the step: %+v", evs)
		}
	})
}

// TestEnrollTokenUses: an enrollment token works until it expires and
// for as many enrollments as it allows, never one more.
func TestEnrollTokenUses(t *testing.T) {
	eachDB(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s, err := Open(url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		now := time.Now()
		if err := s.AddToken(ctx, Token{Hash: "two", Role: api.RoleEnroll, Name: "two", MaxUses: 2, Ring: "canary", Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddToken(ctx, Token{Hash: "old", Role: api.RoleEnroll, Name: "old", Expires: now.Add(-time.Second)}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddToken(ctx, Token{Hash: "adm", Role: api.RoleAdmin, Name: "adm"}); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if tok, err := s.UseEnrollToken(ctx, "two", api.RoleEnroll, now); err != nil || tok.Ring != "canary" || tok.Uses != i+1 {
				t.Errorf("use %d: %+v, %v", i+1, tok, err)
			}
		}
		if _, err := s.UseEnrollToken(ctx, "two", api.RoleEnroll, now); !errors.Is(err, ErrTokenSpent) {
			t.Errorf("a third use: %v, want ErrTokenSpent", err)
		}
		if _, err := s.UseEnrollToken(ctx, "old", api.RoleEnroll, now); !errors.Is(err, ErrTokenSpent) {
			t.Errorf("an expired token: %v, want ErrTokenSpent", err)
		}
		if _, err := s.UseEnrollToken(ctx, "adm", api.RoleEnroll, now); !errors.Is(err, ErrNotFound) {
			t.Errorf("an admin token: %v, want ErrNotFound", err)
		}
	})
}

// TestUpgradeKeepsRings: the devices enrolled before devices needed an
// operator's approval stay in the ring their label named, approved; one
// without a ring label waits.
func TestUpgradeKeepsRings(t *testing.T) {
	eachDB(t, func(t *testing.T, url string) {
		ctx := context.Background()
		driver, dsn, dialect := "sqlite", "file:"+url, "sqlite"
		if strings.HasPrefix(url, "postgres") {
			driver, dsn, dialect = "pgx", url, "postgres"
		}
		db, err := sql.Open(driver, dsn)
		if err != nil {
			t.Fatal(err)
		}
		old := &Store{db: db, dialect: dialect}
		if err := old.migrateTo(ctx, 3); err != nil {
			t.Fatal(err)
		}
		for id, labels := range map[string]string{"d-canary": `{"ring":"canary"}`, "d-none": `{}`} {
			if _, err := db.ExecContext(ctx, `INSERT INTO devices (id, name, hostname, kernel, labels, serial, enrolled, last_seen, revoked, inventory, inventory_at)
				VALUES ($1, $1, $1, '', $2, $1, 5, 0, 0, '{}', 0)`, id, labels); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()
		s, err := Open(url)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if d, err := s.Device(ctx, "d-canary"); err != nil || d.Ring != "canary" || d.Approved.IsZero() {
			t.Errorf("a device of ring canary after the upgrade: %+v, %v", d.Device, err)
		}
		if d, err := s.Device(ctx, "d-none"); err != nil || d.Ring != "" || !d.Approved.IsZero() {
			t.Errorf("a device without a ring after the upgrade: %+v, %v", d.Device, err)
		}
	})
}

// TestRolloutStartsAcrossReplicas: two server replicas on one PostgreSQL
// database start a rollout of the same patch at the same instant. The
// first is held between its one-running-rollout check and its write; the
// second must not pass its own check meanwhile (it waits, then sees the
// first's rollout): exactly one runs.
func TestRolloutStartsAcrossReplicas(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	a, err := Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	info := api.PatchInfo{SHA256: "aa", ID: "p", Version: 1, Published: time.Now()}
	if err := a.AddPatch(ctx, info, []byte("file")); err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	testHookActiveChecked = func(r Rollout) {
		if r.ID == "ro-a" {
			close(held)
			<-release
		}
	}
	defer func() { testHookActiveChecked = nil }()
	start := func(s *Store, id string) error {
		r := Rollout{Members: map[string][]string{}}
		r.ID, r.Patch, r.State, r.Created, r.Updated = id, info, api.StateRunning, time.Now(), time.Now()
		_, err := s.SaveRollout(ctx, r, time.Time{}, false, nil)
		return err
	}
	errA := make(chan error, 1)
	go func() { errA <- start(a, "ro-a") }()
	select {
	case <-held:
	case err := <-errA:
		t.Fatalf("replica a's start ended before its write: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("replica a's start never reached its write")
	}
	errB := make(chan error, 1)
	go func() { errB <- start(b, "ro-b") }()
	// Give replica b the time to pass its check, if nothing holds it.
	select {
	case err := <-errB:
		close(release)
		<-errA
		t.Fatalf("replica b's start finished (%v) while replica a's was between its check and its write", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-errA; err != nil {
		t.Fatalf("replica a: %v", err)
	}
	if err := <-errB; !errors.Is(err, ErrActiveRollout) {
		t.Errorf("replica b: %v, want ErrActiveRollout", err)
	}
	all, err := b.Rollouts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	running := 0
	for _, r := range all {
		if r.State == api.StateRunning {
			running++
		}
	}
	if running != 1 {
		t.Errorf("%d rollouts of p run, want 1", running)
	}
}
