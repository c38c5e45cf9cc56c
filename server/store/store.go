// Package store keeps hotpatch-server's state: tokens, devices and their
// inventories, the patch catalog, rollouts, the audit log and a change
// counter. One type over database/sql and two databases: SQLite
// (modernc.org/sqlite, pure Go, the embedded default) and PostgreSQL (pgx),
// with the same SQL (both take $1 parameters, ON CONFLICT and RETURNING);
// the migrations are written once and their few SQLite-only words
// rewritten for PostgreSQL (dialectSQL).
package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver

	"github.com/hotpatch/hotpatch/server/api"
)

//go:embed migrations
var migrations embed.FS

// ErrNotFound is returned for a missing device, patch, rollout or token.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a rollout changed since it was read (two
// server replicas drove it at once): read it again.
var ErrConflict = errors.New("changed meanwhile")

// Store is the server's state in a database.
type Store struct {
	db      *sql.DB
	dialect string // "sqlite" or "postgres"
}

// Dialect is "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.dialect }

// Open opens the PostgreSQL database at url (postgres://…) or, for any
// other string, the SQLite file at that path.
func Open(url string) (*Store, error) {
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		return OpenPostgres(url)
	}
	return OpenSQLite(url)
}

// OpenPostgres connects to a PostgreSQL database and brings its schema up
// to date. Several servers may share it.
func OpenPostgres(url string) (*Store, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(16)
	s := &Store{db: db, dialect: "postgres"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return s, nil
}

// OpenSQLite opens (creating it if needed) the SQLite database at path
// and brings its schema up to date.
func OpenSQLite(path string) (*Store, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1) // one writer; SQLite serialises anyway
	s := &Store{db: db, dialect: "sqlite"}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// dialectSQL rewrites the migrations' few SQLite-only words for
// PostgreSQL: the migrations are written once, in SQLite's words.
func (s *Store) dialectSQL(q string) string {
	if s.dialect != "postgres" {
		return q
	}
	return strings.NewReplacer("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY", "BLOB", "BYTEA").Replace(q)
}

// migrate applies the embedded migrations not applied yet, each in a
// transaction, recording the schema version.
func (s *Store) migrate(ctx context.Context) error { return s.migrateTo(ctx, 0) }

// migrateTo applies the migrations not applied yet up to number last
// (0: all).
func (s *Store) migrateTo(ctx context.Context, last int) error {
	if s.dialect == "postgres" {
		// Two servers starting at once: one migrates, the other waits.
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(8443)`); err != nil {
			return err
		}
		defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(8443)`)
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return err
	}
	var v int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v); err != nil {
		return err
	}
	const dir = "migrations"
	ents, err := migrations.ReadDir(dir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, name := range names {
		n, err := strconv.Atoi(strings.SplitN(name, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: name must start with its number", name)
		}
		if n <= v || last > 0 && n > last {
			continue
		}
		body, err := migrations.ReadFile(dir + "/" + name)
		if err != nil {
			return err
		}
		body = []byte(s.dialectSQL(string(body)))
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, stmt := range strings.Split(string(body), ";") {
			if strings.TrimSpace(stmt) == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				tx.Rollback()
				return fmt.Errorf("migration %s: %w", name, err)
			}
		}
		if fix := afterMigration[n]; fix != nil {
			if err := fix(ctx, tx); err != nil {
				tx.Rollback()
				return fmt.Errorf("migration %s: %w", name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, n); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// afterMigration holds, by migration number, what a migration needs done
// in Go, in its transaction.
var afterMigration = map[int]func(context.Context, *sql.Tx) error{
	4: approveEnrolled,
}

// approveEnrolled runs with migration 4, which makes a device's ring an
// operator's decision: the devices enrolled before it were in the ring
// their label named, under the rules the operator ran them with, so they
// stay there, approved as of their enrollment (an upgrade must not empty
// every ring). Devices enrolled later wait for approval.
func approveEnrolled(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, labels, enrolled FROM devices`)
	if err != nil {
		return err
	}
	type dev struct {
		id, ring string
		enrolled int64
	}
	var devs []dev
	for rows.Next() {
		var d dev
		var labels string
		if err := rows.Scan(&d.id, &labels, &d.enrolled); err != nil {
			rows.Close()
			return err
		}
		var m map[string]string
		json.Unmarshal([]byte(labels), &m)
		if d.ring = m["ring"]; d.ring != "" {
			devs = append(devs, d)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, d := range devs {
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET ring = $1, approved = $2 WHERE id = $3`, d.ring, max(d.enrolled, 1), d.id); err != nil {
			return err
		}
	}
	return nil
}

// nanos is how times are stored: nanoseconds since the Unix epoch, 0 for
// the zero time (never, not set).
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos reads a stored time (0 is the zero time).
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Token is an admin or enrollment token, by the SHA-256 of its value.
type Token struct {
	Hash, Role, Name string
	Created          time.Time
	// Enrollment tokens only: when it stops working (zero: never), how
	// many enrollments it allows (0: any number) and has had, and the
	// ring its devices are put in, approved ("": they wait for an
	// operator's approval).
	Expires time.Time
	MaxUses int
	Uses    int
	Ring    string
}

// AddToken stores a token's hash.
func (s *Store) AddToken(ctx context.Context, t Token) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens (hash, role, name, created, expires, max_uses, uses, ring) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)`,
		t.Hash, t.Role, t.Name, nanos(time.Now()), nanos(t.Expires), t.MaxUses, t.Ring)
	return err
}

const tokenColumns = `hash, role, name, created, expires, max_uses, uses, ring`

func scanToken(row interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var created, expires int64
	err := row.Scan(&t.Hash, &t.Role, &t.Name, &created, &expires, &t.MaxUses, &t.Uses, &t.Ring)
	t.Created, t.Expires = fromNanos(created), fromNanos(expires)
	return t, err
}

// TokenByHash returns the token with that hash.
func (s *Store) TokenByHash(ctx context.Context, hash string) (Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = $1`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return Token{Hash: hash}, ErrNotFound
	}
	return t, err
}

// ErrTokenSpent is returned by UseEnrollToken for an enrollment token
// that expired or has no uses left.
var ErrTokenSpent = errors.New("enrollment token expired or used up")

// UseEnrollToken counts one use of an enrollment token, in one statement
// (two enrollments at once cannot both take the last use), and returns
// it; ErrNotFound if no enrollment token has that hash, ErrTokenSpent if
// it expired at now or has no uses left.
func (s *Store) UseEnrollToken(ctx context.Context, hash, role string, now time.Time) (Token, error) {
	var used string
	err := s.db.QueryRowContext(ctx, `UPDATE tokens SET uses = uses + 1 WHERE hash = $1 AND role = $2
		AND (expires = 0 OR expires > $3) AND (max_uses = 0 OR uses < max_uses) RETURNING hash`, hash, role, nanos(now)).Scan(&used)
	if errors.Is(err, sql.ErrNoRows) {
		t, err := s.TokenByHash(ctx, hash)
		if err != nil {
			return t, err
		}
		if t.Role != role {
			return t, ErrNotFound
		}
		return t, ErrTokenSpent
	}
	if err != nil {
		return Token{}, err
	}
	return s.TokenByHash(ctx, hash)
}

// Tokens returns every token, oldest first.
func (s *Store) Tokens(ctx context.Context) ([]Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY created, hash`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// DeleteToken forgets a token and ends its dashboard sessions.
func (s *Store) DeleteToken(ctx context.Context, hash string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = $1`, hash); err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE hash = $1`, hash)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return tx.Commit()
}

// Meta reads a value of the meta table ("" if absent).
func (s *Store) Meta(ctx context.Context, key string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// SetMeta writes a value of the meta table.
func (s *Store) SetMeta(ctx context.Context, key, value string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	return err
}

// Device is an enrolled device with its last inventory. Its ring
// (api.Device.Ring) counts only once it is approved.
type Device struct {
	api.Device
	Serial      string
	Inventory   api.Inventory
	InventoryAt time.Time
}

// AddDevice stores a newly enrolled device (approved when d.Approved
// is set: its token bound it to a ring).
func (s *Store) AddDevice(ctx context.Context, d Device) error {
	labels, _ := json.Marshal(d.Labels)
	_, err := s.db.ExecContext(ctx, `INSERT INTO devices (id, name, hostname, kernel, labels, serial, enrolled, last_seen, revoked, inventory, inventory_at, ring, approved)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, '{}', 0, $8, $9)`, d.ID, d.Name, d.Hostname, d.Kernel, string(labels), d.Serial, nanos(d.Enrolled), d.Ring, nanos(d.Approved))
	return err
}

// ApproveDevice puts a device in a ring and marks it approved at a time
// (an operator's decision); ErrNotFound for an unknown device.
func (s *Store) ApproveDevice(ctx context.Context, id, ring string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE devices SET ring = $1, approved = $2 WHERE id = $3`, ring, nanos(at), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

const deviceColumns = `id, name, hostname, kernel, labels, serial, enrolled, last_seen, revoked, inventory, inventory_at, ring, approved`

func scanDevice(row interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var labels, inv string
	var enrolled, seen, revoked, invAt, approved int64
	if err := row.Scan(&d.ID, &d.Name, &d.Hostname, &d.Kernel, &labels, &d.Serial, &enrolled, &seen, &revoked, &inv, &invAt, &d.Ring, &approved); err != nil {
		return d, err
	}
	json.Unmarshal([]byte(labels), &d.Labels)
	json.Unmarshal([]byte(inv), &d.Inventory)
	d.Enrolled, d.LastSeen, d.Revoked, d.InventoryAt, d.Approved = fromNanos(enrolled), fromNanos(seen), fromNanos(revoked), fromNanos(invAt), fromNanos(approved)
	d.Processes = len(d.Inventory.Processes)
	seenIDs := map[string]bool{}
	for _, p := range d.Inventory.Processes {
		for _, a := range p.Patches {
			if a.State == "applied" && !seenIDs[a.ID] {
				seenIDs[a.ID] = true
				d.Applied = append(d.Applied, a.ID)
			}
		}
	}
	sort.Strings(d.Applied)
	return d, nil
}

// Device returns one device.
func (s *Store) Device(ctx context.Context, id string) (Device, error) {
	d, err := scanDevice(s.db.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	}
	return d, err
}

// DeviceAuth returns what authenticating a device request needs: its
// certificate serial and when it was revoked (zero if not).
func (s *Store) DeviceAuth(ctx context.Context, id string) (serial string, revoked time.Time, err error) {
	var r int64
	err = s.db.QueryRowContext(ctx, `SELECT serial, revoked FROM devices WHERE id = $1`, id).Scan(&serial, &r)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, ErrNotFound
	}
	return serial, fromNanos(r), err
}

// Devices returns every device, by enrollment.
func (s *Store) Devices(ctx context.Context) ([]Device, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices ORDER BY enrolled, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Seen records that a device was heard from.
func (s *Store) Seen(ctx context.Context, id string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE devices SET last_seen = $1 WHERE id = $2`, nanos(at), id)
	return err
}

// SetInventory stores a device's inventory.
func (s *Store) SetInventory(ctx context.Context, id string, inv api.Inventory, at time.Time) error {
	data, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `UPDATE devices SET inventory = $1, inventory_at = $2, hostname = $3, kernel = $4, last_seen = $2 WHERE id = $5`,
		string(data), nanos(at), inv.Hostname, inv.Kernel, id)
	return err
}

// Revoke marks a device revoked.
func (s *Store) Revoke(ctx context.Context, id string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE devices SET revoked = $1 WHERE id = $2 AND revoked = 0`, nanos(at), id)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := s.Device(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// AddPatch stores a published patch (a second publish of the same file
// changes nothing).
func (s *Store) AddPatch(ctx context.Context, info api.PatchInfo, data []byte) error {
	raw, _ := json.Marshal(info)
	_, err := s.db.ExecContext(ctx, `INSERT INTO patches (sha256, id, version, info, data, published) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (sha256) DO NOTHING`, info.SHA256, info.ID, info.Version, string(raw), data, nanos(info.Published))
	return err
}

// Patches returns the catalog, newest first.
func (s *Store) Patches(ctx context.Context) ([]api.PatchInfo, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT info FROM patches ORDER BY published DESC, sha256`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.PatchInfo
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		var p api.PatchInfo
		if err := json.Unmarshal([]byte(raw), &p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// Patch returns a patch's description by SHA-256, or the newest version
// of a patch id.
func (s *Store) Patch(ctx context.Context, ref string) (api.PatchInfo, error) {
	return scanPatchInfo(s.db.QueryRowContext(ctx, `SELECT info FROM patches WHERE sha256 = $1 OR id = $1 ORDER BY (sha256 = $1) DESC, version DESC, published DESC LIMIT 1`, ref))
}

// scanPatchInfo reads the info column of one patch row.
func scanPatchInfo(row *sql.Row) (api.PatchInfo, error) {
	var raw string
	err := row.Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return api.PatchInfo{}, ErrNotFound
	}
	var p api.PatchInfo
	if err == nil {
		err = json.Unmarshal([]byte(raw), &p)
	}
	return p, err
}

// PatchVersion returns the patch published under an id and level
// (ErrNotFound if none).
func (s *Store) PatchVersion(ctx context.Context, id string, version uint32) (api.PatchInfo, error) {
	return scanPatchInfo(s.db.QueryRowContext(ctx, `SELECT info FROM patches WHERE id = $1 AND version = $2 ORDER BY published LIMIT 1`, id, version))
}

// PatchData returns a patch file by SHA-256.
func (s *Store) PatchData(ctx context.Context, sha string) ([]byte, error) {
	var data []byte
	err := s.db.QueryRowContext(ctx, `SELECT data FROM patches WHERE sha256 = $1`, sha).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return data, err
}

// Rollout is a rollout as stored: the API view plus, per ring, the
// devices it was fixed to when it started.
type Rollout struct {
	api.Rollout
	Windows map[string]string   `json:"windows,omitempty"`
	Members map[string][]string `json:"members,omitempty"` // ring → device ids
	// Revert: the devices where it landed must take it off (a rollback,
	// or a halt on exceeded failures).
	Revert bool `json:"revert,omitempty"`
}

// AddRollout stores a new rollout.
func (s *Store) AddRollout(ctx context.Context, r Rollout) error {
	_, err := s.SaveRollout(ctx, r, time.Time{}, false, nil)
	return err
}

// UpdateRollout stores a changed rollout if it is still as it was when
// read (its Updated time was prev); otherwise ErrConflict.
func (s *Store) UpdateRollout(ctx context.Context, r Rollout, prev time.Time) error {
	_, err := s.SaveRollout(ctx, r, prev, false, nil)
	return err
}

// ErrActiveRollout is returned when a rollout would run beside another
// running rollout of the same patch id.
var ErrActiveRollout = errors.New("another rollout of this patch is running")

// SaveRollout stores one step of a rollout in one transaction: the
// rollout (new when prev is zero, else only if it is still as it was
// when read: its Updated time was prev, otherwise ErrConflict), the
// change counter moved when bump is set (devices' desired state
// changed), and the step's audit events. Either all of it is stored or
// none. A running rollout is refused (ErrActiveRollout) while another
// rollout of the same patch id runs. It returns the change counter
// (0 without bump).
func (s *Store) SaveRollout(ctx context.Context, r Rollout, prev time.Time, bump bool, events []api.AuditEvent) (int64, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if r.State == api.StateRunning {
		if s.dialect == "postgres" {
			// Replicas share the database: serialise the check and the
			// write per patch id until this transaction ends, so two
			// starts of one patch at the same instant cannot both pass
			// (at read committed, the second one's check then sees the
			// first one's row). SQLite has one writer already.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(8444, hashtext($1))`, r.Patch.ID); err != nil {
				return 0, err
			}
		}
		if err := activeElsewhere(ctx, tx, r); err != nil {
			return 0, err
		}
		if testHookActiveChecked != nil {
			testHookActiveChecked(r)
		}
	}
	if prev.IsZero() {
		if _, err := tx.ExecContext(ctx, `INSERT INTO rollouts (id, patch_sha, state, body, created, updated) VALUES ($1, $2, $3, $4, $5, $6)`,
			r.ID, r.Patch.SHA256, r.State, string(raw), nanos(r.Created), nanos(r.Updated)); err != nil {
			return 0, err
		}
	} else {
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET state = $1, body = $2, updated = $3 WHERE id = $4 AND updated = $5`,
			r.State, string(raw), nanos(r.Updated), r.ID, nanos(prev))
		if err != nil {
			return 0, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return 0, ErrConflict
		}
	}
	var n int64
	if bump {
		if err := tx.QueryRowContext(ctx, `UPDATE change SET n = n + 1 WHERE id = 1 RETURNING n`).Scan(&n); err != nil {
			return 0, err
		}
	}
	for _, e := range events {
		if _, err := addEvent(ctx, tx, e); err != nil {
			return 0, err
		}
	}
	return n, tx.Commit()
}

// testHookActiveChecked, set by tests only, runs in SaveRollout after the
// one-running-rollout check of a running rollout, before its write.
var testHookActiveChecked func(r Rollout)

// activeElsewhere returns ErrActiveRollout if a rollout other than r of
// r's patch id is running.
func activeElsewhere(ctx context.Context, tx *sql.Tx, r Rollout) error {
	rows, err := tx.QueryContext(ctx, `SELECT body FROM rollouts WHERE state = $1 AND id <> $2`, api.StateRunning, r.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return err
		}
		var other Rollout
		if err := json.Unmarshal([]byte(raw), &other); err != nil {
			return err
		}
		if other.Patch.ID == r.Patch.ID {
			return fmt.Errorf("%w: %s", ErrActiveRollout, other.ID)
		}
	}
	return rows.Err()
}

// Change returns the change counter: it grows whenever some device's
// desired state may have changed (the long-poll cursor).
func (s *Store) Change(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT n FROM change WHERE id = 1`).Scan(&n)
	return n, err
}

// BumpChange adds one to the change counter and returns it.
func (s *Store) BumpChange(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `UPDATE change SET n = n + 1 WHERE id = 1 RETURNING n`).Scan(&n)
	return n, err
}

// Rollouts returns every rollout, oldest first.
func (s *Store) Rollouts(ctx context.Context) ([]Rollout, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT body FROM rollouts ORDER BY created, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Rollout
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		var r Rollout
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Rollout returns one rollout.
func (s *Store) Rollout(ctx context.Context, id string) (Rollout, error) {
	var raw string
	err := s.db.QueryRowContext(ctx, `SELECT body FROM rollouts WHERE id = $1`, id).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return Rollout{}, ErrNotFound
	}
	var r Rollout
	if err == nil {
		err = json.Unmarshal([]byte(raw), &r)
	}
	if r.Members == nil {
		r.Members = map[string][]string{}
	}
	return r, err
}

// AddEvent appends to the audit log and returns its sequence number.
func (s *Store) AddEvent(ctx context.Context, e api.AuditEvent) (int64, error) {
	return addEvent(ctx, s.db, e)
}

// execer is a database or a transaction.
type execer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func addEvent(ctx context.Context, db execer, e api.AuditEvent) (int64, error) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	var seq int64
	err := db.QueryRowContext(ctx, `INSERT INTO events (time, actor, type, device, rollout, patch, message) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq`,
		nanos(e.Time), e.Actor, e.Type, e.Device, e.Rollout, e.Patch, e.Message).Scan(&seq)
	return seq, err
}

// Events returns audit events after seq, oldest first, at most limit
// (default and most 10,000).
func (s *Store) Events(ctx context.Context, after int64, limit int) ([]api.AuditEvent, error) {
	if limit <= 0 {
		limit = 10000
	}
	return s.FindEvents(ctx, EventFilter{After: after, Oldest: true, Limit: limit})
}

// DevicesWithEvents returns the devices that reported an event of one of
// the types for a patch after a time (the rollout engine's failures), in
// one query.
func (s *Store) DevicesWithEvents(ctx context.Context, patch string, after time.Time, types []string) (map[string]bool, error) {
	q := `SELECT DISTINCT device FROM events WHERE patch = $1 AND time > $2 AND device <> '' AND type IN (`
	args := []any{patch, nanos(after)}
	for i, t := range types {
		if i > 0 {
			q += ", "
		}
		q += "$" + strconv.Itoa(i+3)
		args = append(args, t)
	}
	rows, err := s.db.QueryContext(ctx, q+")", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out[d] = true
	}
	return out, rows.Err()
}

// DeviceEvents returns a device's events of the given types for a patch
// after a time (the rollout engine counts failures with it).
func (s *Store) DeviceEvents(ctx context.Context, device, patch string, after time.Time, types []string) ([]api.AuditEvent, error) {
	q := `SELECT ` + eventColumns + ` FROM events WHERE device = $1 AND patch = $2 AND time > $3 AND type IN (`
	args := []any{device, patch, nanos(after)}
	for i, t := range types {
		if i > 0 {
			q += ", "
		}
		q += "$" + strconv.Itoa(i+4)
		args = append(args, t)
	}
	return s.queryEvents(ctx, q+") ORDER BY seq", args...)
}

// eventColumns are the columns queryEvents reads, in order.
const eventColumns = `seq, time, actor, type, device, rollout, patch, message`

// queryEvents runs a query that selects eventColumns.
func (s *Store) queryEvents(ctx context.Context, q string, args ...any) ([]api.AuditEvent, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.AuditEvent
	for rows.Next() {
		var e api.AuditEvent
		var t int64
		if err := rows.Scan(&e.Seq, &t, &e.Actor, &e.Type, &e.Device, &e.Rollout, &e.Patch, &e.Message); err != nil {
			return nil, err
		}
		e.Time = fromNanos(t)
		out = append(out, e)
	}
	return out, rows.Err()
}
