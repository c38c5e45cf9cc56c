// Package server is hotpatch-server: enrollment of devices, the patch
// catalog, rollouts in rings with health gates, sync by long-poll, CVE
// reports and the audit log, over HTTPS (TLS 1.3). See docs/server.md.
package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
	"github.com/hotpatch/hotpatch/server/store"
)

// Config configures a server.
type Config struct {
	// DataDir holds the CA, the server certificate, the first tokens and
	// the SQLite database; the first start creates them.
	DataDir string
	// Listen is the address to listen on (default 127.0.0.1:8443).
	Listen string
	// DB is a PostgreSQL URL (postgres://…); empty: SQLite in DataDir.
	// Several servers with the same DB (and copies of the same DataDir
	// for the CA) serve one fleet.
	DB string
	// Hosts are extra names for the server certificate.
	Hosts []string
	// Publishers are public key files a published patch must be signed
	// by, and so is every *.pub in TrustDir (hotpatch-server passes
	// /etc/hotpatch/trusted; the package reads no machine-wide path of its
	// own, so a test's server is not steered by what the machine holds).
	// With none, New refuses to start unless AnyPublisher is set: then any
	// valid signature is accepted for the catalog (agents still verify
	// with their own keys).
	Publishers   []string
	TrustDir     string
	AnyPublisher bool
	// Tick is how often rollouts are driven (default 1s).
	Tick time.Duration
	// Resync is how often agents re-send their inventory (default 6h).
	Resync time.Duration
	// ExposureEvery is how often, at most, the fleet's exposure per CVE
	// is sampled for the dashboard's chart (default 10s; a sample is
	// stored only when a count moved).
	ExposureEvery time.Duration
	// SessionTTL is how long a dashboard sign-in lasts (default 12h).
	SessionTTL time.Duration
	// MaxUnauthenticated is how many requests without credentials
	// (enrollments, dashboard sign-ins) are served at once; more are
	// answered 503 at once (default 64). BodyTimeout is how long such a
	// request may take to send its body (default 10s).
	MaxUnauthenticated int
	BodyTimeout        time.Duration
	// AuthFailures is how many failed sign-ins or unknown bearer tokens
	// one address may send per minute before it is answered 429
	// (default 20).
	AuthFailures int
	// Log receives the server's warnings and errors (default: stderr).
	Log *log.Logger
}

// Server is a running hotpatch-server.
//
// Lock order. driving is the outermost: advance and steer hold it while
// they read the store, store a step, and then take seqMu (sawChange) and
// uiMu (dashboardChanged). seqMu and uiMu are leaves, held for a few
// instructions, never while taking another lock. tokMu, cacheMu and
// snapMu are each held alone, around store reads and writes (tokMu also
// around writing a token file). So: driving → seqMu, driving → uiMu;
// nothing else nests, and no lock is taken while holding seqMu or uiMu.
// (failureLimiter has its own leaf mutex.) Each mutex guards only the
// fields listed under it.
type Server struct {
	cfg        Config
	log        *log.Logger
	ca         *pki.CA
	st         *store.Store
	publishers []patch.PublicKey

	// The data directory's tokens (admin.token, enroll.token), as of the
	// last start or rotation here.
	tokMu      sync.Mutex
	adminToken string
	enrollTok  string

	ln   net.Listener
	http *http.Server
	url  string

	// changed is closed and replaced whenever the store's change counter
	// moves (here or on another replica): it wakes every long-poll. seq
	// only grows.
	seqMu   sync.Mutex
	changed chan struct{}
	seq     int64 // the store's change counter as last seen

	// cache holds the rollouts as of one change (see rolloutsAt).
	cacheMu sync.Mutex
	cache   *rolloutCache

	// driving serialises the rollout engine; driveNow wakes it.
	driving  sync.Mutex
	driveNow chan struct{}
	stop     chan struct{}
	loops    sync.WaitGroup // drive and watchChanges
	closed   sync.Once
	closeErr error
	metrics  metrics

	// unauth counts the requests without credentials being served;
	// authFails the recent failed sign-ins per address.
	unauth    chan struct{}
	authFails failureLimiter

	// The dashboard: its templates and assets, and uiCh, closed and
	// replaced whenever something it shows may have changed (it wakes
	// the server-sent event streams).
	ui       *dashboard
	uiMu     sync.Mutex
	uiCh     chan struct{}
	exposure exposureSampler
	snapMu   sync.Mutex
	snap     *fleetSnapshot
}

// File names in the data directory.
const (
	AdminTokenFile  = "admin.token"
	EnrollTokenFile = "enroll.token"
	DBFile          = "hotpatch.db"
)

// New initialises (first start) or opens the data directory.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("no data directory: give --data DIR")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8443"
	}
	if cfg.Tick == 0 {
		cfg.Tick = time.Second
	}
	if cfg.Resync == 0 {
		cfg.Resync = 6 * time.Hour
	}
	if cfg.ExposureEvery == 0 {
		cfg.ExposureEvery = 10 * time.Second
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.MaxUnauthenticated <= 0 {
		cfg.MaxUnauthenticated = 64
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = 10 * time.Second
	}
	if cfg.AuthFailures <= 0 {
		cfg.AuthFailures = 20
	}
	logger := cfg.Log
	if logger == nil {
		logger = log.New(os.Stderr, "hotpatch-server: ", log.LstdFlags)
	}
	ui, err := loadDashboard()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	if err := securePrivate(logger, cfg.DataDir); err != nil {
		return nil, err
	}
	ca, err := pki.Init(cfg.DataDir, cfg.Hosts)
	if err != nil {
		return nil, err
	}
	dbURL := cfg.DB
	if dbURL == "" {
		dbURL = filepath.Join(cfg.DataDir, DBFile)
		if err := createPrivate(dbURL); err != nil {
			return nil, err
		}
	}
	st, err := store.Open(dbURL)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: logger, ca: ca, st: st, changed: make(chan struct{}), driveNow: make(chan struct{}, 1),
		stop: make(chan struct{}), ui: ui, uiCh: make(chan struct{}),
		unauth: make(chan struct{}, cfg.MaxUnauthenticated), authFails: failureLimiter{max: cfg.AuthFailures}}
	if s.seq, err = st.Change(context.Background()); err != nil {
		st.Close()
		return nil, err
	}
	ctx := context.Background()
	if s.adminToken, err = s.firstToken(ctx, AdminTokenFile, api.RoleAdmin, "admin"); err != nil {
		st.Close()
		return nil, err
	}
	if s.enrollTok, err = s.firstToken(ctx, EnrollTokenFile, api.RoleEnroll, "enroll"); err != nil {
		st.Close()
		return nil, err
	}
	// The files the first start made: private from the start, and the
	// SQLite files once the database made them.
	if err := securePrivate(logger, cfg.DataDir); err != nil {
		st.Close()
		return nil, err
	}
	var sys []string
	if cfg.TrustDir != "" {
		sys, _ = filepath.Glob(filepath.Join(cfg.TrustDir, "*.pub"))
	}
	for _, f := range append(append([]string{}, cfg.Publishers...), sys...) {
		k, err := patch.ReadPublicKey(f)
		if err != nil {
			st.Close()
			return nil, err
		}
		s.publishers = append(s.publishers, k)
	}
	if len(s.publishers) == 0 && !cfg.AnyPublisher {
		st.Close()
		return nil, ErrNoPublisher
	}
	return s, nil
}

// ErrNoPublisher is returned by New when no publisher key is given and
// accepting any signer was not chosen.
//
// Decision: a publisher key is required by default. Without one, anyone
// with an operator token could put a patch signed by any key in the
// catalog; agents would still refuse it unless they trust that key, but
// the catalog, its reports and its rollouts would show it. Accepting any
// signer stays possible, as an explicit choice (--any-publisher).
var ErrNoPublisher = errors.New("no publisher key: give --publisher KEY.pub (the public key your patches are signed with; /etc/hotpatch/trusted/*.pub count too), or --any-publisher to accept a patch signed by any key")

// privateFiles are the data directory's files that only the server may
// read.
var privateFiles = []string{"ca.key", "server.key", AdminTokenFile, EnrollTokenFile, DBFile, DBFile + "-wal", DBFile + "-shm"}

// securePrivate makes the data directory 0700 and its private files
// 0600 when another user could read or write them, with a warning that
// names each: a key or token readable by others is a leaked one
// (Decision: repair and warn rather than refuse: the server that starts
// is safer than one that does not, and the warning tells the operator
// to rotate what may have been read).
func securePrivate(logger *log.Logger, dir string) error {
	fix := func(path string, want os.FileMode) error {
		fi, err := os.Lstat(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symbolic link; the data directory's private files must be regular files", path)
		}
		if fi.Mode().Perm()&0o077 == 0 {
			return nil
		}
		if err := os.Chmod(path, want); err != nil {
			return fmt.Errorf("%s has mode %v, readable by other users, and could not be made %v: %w", path, fi.Mode().Perm(), want, err)
		}
		logger.Printf("warning: %s had mode %v (other users could read it); made it %v. If someone else could read it, rotate it (hotpatch fleet token rotate, or a new CA)", path, fi.Mode().Perm(), want)
		return nil
	}
	if err := fix(dir, 0o700); err != nil {
		return err
	}
	for _, f := range privateFiles {
		if err := fix(filepath.Join(dir, f), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// createPrivate creates an empty file 0600 if it does not exist (SQLite
// makes its -wal and -shm files with the database file's mode).
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// dataDirTokenKey is the meta key that holds the hash of a data-directory
// token file's token: a new file revokes the token it replaces.
func dataDirTokenKey(file string) string { return "datadir_token:" + file }

// firstToken reads the token file, or, when there is none (the first
// start, or the operator removed it), makes a token, stores its hash,
// writes the file (0600) and revokes the token the file held before.
func (s *Server) firstToken(ctx context.Context, file, role, name string) (string, error) {
	path := filepath.Join(s.cfg.DataDir, file)
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if _, err := s.st.TokenByHash(ctx, pki.TokenHash(tok)); err != nil {
			return "", fmt.Errorf("%s is not a token this server knows (%v); remove it to make a new one", path, err)
		}
		if old, err := s.st.Meta(ctx, dataDirTokenKey(file)); err != nil {
			return "", err
		} else if old == "" {
			if err := s.st.SetMeta(ctx, dataDirTokenKey(file), pki.TokenHash(tok)); err != nil {
				return "", err
			}
		}
		return tok, nil
	}
	return s.replaceToken(ctx, file, role, name)
}

// replaceToken makes a new token for a data-directory file, writes the
// file and revokes the token it held before.
func (s *Server) replaceToken(ctx context.Context, file, role, name string) (string, error) {
	path := filepath.Join(s.cfg.DataDir, file)
	tok, hash := pki.NewToken()
	if err := s.st.AddToken(ctx, store.Token{Hash: hash, Role: role, Name: name}); err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	old, err := s.st.Meta(ctx, dataDirTokenKey(file))
	if err != nil {
		return "", err
	}
	if err := s.st.SetMeta(ctx, dataDirTokenKey(file), hash); err != nil {
		return "", err
	}
	if old != "" && old != hash {
		if err := s.st.DeleteToken(ctx, old); err != nil && !errors.Is(err, store.ErrNotFound) {
			return "", fmt.Errorf("revoking the token %s held before: %w", path, err)
		}
	}
	return tok, nil
}

// RotateToken replaces the data directory's admin token ("admin") or
// enrollment token ("enroll"): the old value stops working at once, the
// new one is in the file and returned.
func (s *Server) RotateToken(ctx context.Context, which string) (string, error) {
	file, role := AdminTokenFile, api.RoleAdmin
	switch which {
	case "admin":
	case "enroll":
		file, role = EnrollTokenFile, api.RoleEnroll
	default:
		return "", fmt.Errorf("token %q: rotate admin or enroll", which)
	}
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	tok, err := s.replaceToken(ctx, file, role, which)
	if err != nil {
		return "", err
	}
	if which == "admin" {
		s.adminToken = tok
	} else {
		s.enrollTok = tok
	}
	return tok, nil
}

// NewToken makes an admin token with a role.
func (s *Server) NewToken(role, name string) (string, error) {
	switch role {
	case api.RoleViewer, api.RoleOperator, api.RoleAdmin:
	default:
		return "", fmt.Errorf("role %q: want viewer, operator or admin", role)
	}
	tok, hash := pki.NewToken()
	return tok, s.st.AddToken(context.Background(), store.Token{Hash: hash, Role: role, Name: name})
}

// Start listens and serves in the background, and drives the rollouts.
func (s *Server) Start() error {
	tlsCfg, err := s.ca.ServerTLS()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	s.ln = ln
	s.url = "https://" + ln.Addr().String()
	s.http = &http.Server{
		Handler:           s.routes(),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(handshakeFilter{s.log.Writer()}, s.log.Prefix(), s.log.Flags()),
	}
	s.loops.Add(3)
	go func() {
		defer s.loops.Done()
		if err := s.http.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Printf("serving %s stopped: %v", s.url, err)
		}
	}()
	go func() { defer s.loops.Done(); s.drive() }()
	go func() { defer s.loops.Done(); s.watchChanges() }()
	return nil
}

// watchChanges wakes the long-polls when another replica moved the
// change counter (with SQLite there is no other, and it costs one small
// query a tick), and, while a dashboard is open, its streams when
// another replica changed what they show.
func (s *Server) watchChanges() {
	t := time.NewTicker(min(s.cfg.Tick, 500*time.Millisecond))
	defer t.Stop()
	var version string
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if n, err := s.st.Change(context.Background()); err == nil {
			s.sawChange(n)
		}
		if s.metrics.streams.Load() > 0 {
			if v, err := s.st.Version(context.Background()); err == nil && v != version {
				if version != "" {
					s.dashboardChanged()
				}
				version = v
			}
		}
	}
}

// sawChange records a value of the store's change counter and, if it is
// newer than the last seen, wakes the long-polls. The counter only
// grows, so an older value (a read that raced a bump) is ignored.
func (s *Server) sawChange(n int64) {
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	if n <= s.seq {
		return
	}
	s.seq = n
	close(s.changed)
	s.changed = make(chan struct{})
}

// URL is where the server listens, https://HOST:PORT.
func (s *Server) URL() string { return s.url }

// CA returns the PEM of the server's CA (DataDir/ca.pem).
func (s *Server) CA() []byte { return s.ca.CertPEM() }

// AdminToken is the data directory's admin token (DataDir/admin.token).
func (s *Server) AdminToken() string {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	return s.adminToken
}

// EnrollToken is the data directory's enrollment token
// (DataDir/enroll.token): it never expires and its devices wait for an
// operator's approval.
func (s *Server) EnrollToken() string {
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	return s.enrollTok
}

// Close stops serving (long-polls end), waits for the server's
// goroutines and closes the store. A second Close returns the first's
// result.
func (s *Server) Close() error {
	s.closed.Do(func() {
		close(s.stop)
		var errs []error
		if s.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.http.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shutting down: %w", err))
			}
		}
		s.loops.Wait()
		errs = append(errs, s.st.Close())
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// desiredChanged moves the change counter (devices' desired state may
// have changed) and wakes the long-polls here; other replicas see it
// within a tick.
func (s *Server) desiredChanged() {
	n, err := s.st.BumpChange(context.Background())
	if err != nil {
		s.log.Printf("moving the change counter: %v (devices learn of the change at their next resync)", err)
		return
	}
	s.sawChange(n)
}

// handshakeFilter drops the log lines of connections closed before their
// TLS handshake (browsers open spare connections; probes do it): noise.
// Failed handshakes, a wrong client certificate among them, are kept.
type handshakeFilter struct{ w io.Writer }

func (f handshakeFilter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("TLS handshake error")) && bytes.HasSuffix(bytes.TrimSpace(p), []byte(": EOF")) {
		return len(p), nil
	}
	return f.w.Write(p)
}

func newID(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
