package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
)

// Session is a dashboard sign-in: the browser holds a random value whose
// hash is stored here, bound to the admin token it was made with (a
// token the server no longer knows ends its sessions too).
type Session struct {
	Hash      string // SHA-256 of the cookie's value, hex
	TokenHash string
	CSRF      string // sent back with every form that acts
	Created   time.Time
	Expires   time.Time
}

// AddSession stores a session and drops the expired ones.
func (s *Store) AddSession(ctx context.Context, se Session) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires < $1`, nanos(time.Now())); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO sessions (hash, token_hash, csrf, created, expires) VALUES ($1, $2, $3, $4, $5)`,
		se.Hash, se.TokenHash, se.CSRF, nanos(se.Created), nanos(se.Expires))
	return err
}

// Session returns an unexpired session by the hash of its value.
func (s *Store) Session(ctx context.Context, hash string) (Session, error) {
	se := Session{Hash: hash}
	var created, expires int64
	err := s.db.QueryRowContext(ctx, `SELECT token_hash, csrf, created, expires FROM sessions WHERE hash = $1 AND expires > $2`, hash, nanos(time.Now())).
		Scan(&se.TokenHash, &se.CSRF, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return se, ErrNotFound
	}
	se.Created, se.Expires = fromNanos(created), fromNanos(expires)
	return se, err
}

// DeleteSession ends a session (sign-out).
func (s *Store) DeleteSession(ctx context.Context, hash string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE hash = $1`, hash)
	return err
}

// EventFilter selects audit events. Empty fields match everything.
type EventFilter struct {
	Type, Device, Rollout, Patch string
	Actor                        string // exact, or a prefix ending in ':' ("device:", "token:")
	Text                         string // a substring of the message (case-insensitive)
	Before                       int64  // only events with a smaller seq (paging back); 0: the newest
	After                        int64  // only events with a larger seq
	Oldest                       bool   // oldest first (paging forward) rather than newest first
	Limit                        int    // default 100, at most 10,000
}

// FindEvents returns the audit events matching f, newest first (oldest
// first with f.Oldest).
func (s *Store) FindEvents(ctx context.Context, f EventFilter) ([]api.AuditEvent, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	f.Limit = min(f.Limit, 10000)
	var where []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	for _, c := range []struct{ col, v string }{{"type", f.Type}, {"device", f.Device}, {"rollout", f.Rollout}, {"patch", f.Patch}} {
		if c.v != "" {
			arg(c.col+" = ?", c.v)
		}
	}
	switch {
	case strings.HasSuffix(f.Actor, ":"):
		arg("actor LIKE ? ESCAPE '\\'", likeEscape(f.Actor)+"%")
	case f.Actor != "":
		arg("actor = ?", f.Actor)
	}
	if f.Text != "" {
		arg("LOWER(message) LIKE ? ESCAPE '\\'", "%"+likeEscape(strings.ToLower(f.Text))+"%")
	}
	if f.Before > 0 {
		arg("seq < ?", f.Before)
	}
	if f.After > 0 {
		arg("seq > ?", f.After)
	}
	order := "DESC"
	if f.Oldest {
		order = "ASC"
	}
	q := `SELECT ` + eventColumns + ` FROM events`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(" ORDER BY seq %s LIMIT $%d", order, len(args))
	return s.queryEvents(ctx, q, args...)
}

func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// EventTypes returns the distinct event types in the log, sorted.
func (s *Store) EventTypes(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT type FROM events ORDER BY type`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// ExposureSample is one CVE's counts at one time.
type ExposureSample struct {
	Time                           time.Time
	CVE                            string
	Vulnerable, Protected, FixedOn int
}

// AddExposure records the fleet's exposure per CVE at one time.
func (s *Store) AddExposure(ctx context.Context, at time.Time, cves []api.CVEReport) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for _, c := range cves {
		if _, err := tx.ExecContext(ctx, `INSERT INTO exposure (time, cve, vulnerable, protected, fixed) VALUES ($1, $2, $3, $4, $5)`,
			nanos(at), c.CVE, c.Vulnerable, c.Protected, c.FixedOnDisk); err != nil {
			tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// PruneExposure drops the samples taken before a time.
func (s *Store) PruneExposure(ctx context.Context, before time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM exposure WHERE time < $1`, nanos(before))
	return err
}

// Exposure returns the samples taken after a time, oldest first.
func (s *Store) Exposure(ctx context.Context, after time.Time) ([]ExposureSample, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT time, cve, vulnerable, protected, fixed FROM exposure WHERE time > $1 ORDER BY time, cve`, nanos(after))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ExposureSample
	for rows.Next() {
		var e ExposureSample
		var t int64
		if err := rows.Scan(&t, &e.CVE, &e.Vulnerable, &e.Protected, &e.FixedOn); err != nil {
			return nil, err
		}
		e.Time = fromNanos(t)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Version is a value that moves whenever anything the dashboard shows
// may have changed, here or on another replica: the newest audit event,
// rollout update, inventory, revocation, publication and exposure
// sample.
func (s *Store) Version(ctx context.Context) (string, error) {
	var ev, ro, inv, rev, devs, pats, exp int64
	err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT COALESCE(MAX(seq), 0) FROM events),
		(SELECT COALESCE(MAX(updated), 0) FROM rollouts),
		(SELECT COALESCE(MAX(inventory_at), 0) FROM devices),
		(SELECT COALESCE(MAX(revoked), 0) FROM devices),
		(SELECT COUNT(*) FROM devices),
		(SELECT COUNT(*) FROM patches),
		(SELECT COALESCE(MAX(time), 0) FROM exposure)`).Scan(&ev, &ro, &inv, &rev, &devs, &pats, &exp)
	return fmt.Sprint(ev, ro, inv, rev, devs, pats, exp), err
}

// DeviceNames returns every device's id and name, by name, without the
// inventories (the event log's host filter).
func (s *Store) DeviceNames(ctx context.Context) ([]api.Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name FROM devices ORDER BY name, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Device
	for rows.Next() {
		var d api.Device
		if err := rows.Scan(&d.ID, &d.Name); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
