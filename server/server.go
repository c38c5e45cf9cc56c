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
	// by (/etc/hotpatch/trusted/*.pub too). None: any valid signature is
	// accepted for the catalog (agents still verify with their own keys).
	Publishers []string
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
}

// Server is a running hotpatch-server.
type Server struct {
	cfg        Config
	ca         *pki.CA
	st         *store.Store
	publishers []patch.PublicKey
	adminToken string
	enrollTok  string
	ln         net.Listener
	http       *http.Server
	url        string

	// changed is closed and replaced whenever the store's change counter
	// moves (here or on another replica): it wakes every long-poll.
	mu      sync.Mutex
	changed chan struct{}
	seq     int64 // the store's change counter as last seen

	// cache holds the rollouts as of one change (see rolloutsAt).
	cacheMu sync.Mutex
	cache   *rolloutCache

	// driving serialises the rollout engine; kicks wake it.
	driving sync.Mutex
	kicks   chan struct{}
	stop    chan struct{}
	done    chan struct{}
	metrics metrics

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
	ui, err := loadDashboard()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	ca, err := pki.Init(cfg.DataDir, cfg.Hosts)
	if err != nil {
		return nil, err
	}
	dbURL := cfg.DB
	if dbURL == "" {
		dbURL = filepath.Join(cfg.DataDir, DBFile)
	}
	st, err := store.Open(dbURL)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ca: ca, st: st, changed: make(chan struct{}), kicks: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), ui: ui, uiCh: make(chan struct{})}
	if s.seq, err = st.Change(context.Background()); err != nil {
		st.Close()
		return nil, err
	}
	ctx := context.Background()
	if s.adminToken, err = s.firstToken(ctx, AdminTokenFile, api.RoleAdmin, "admin"); err != nil {
		st.Close()
		return nil, err
	}
	if s.enrollTok, err = s.firstToken(ctx, EnrollTokenFile, roleEnroll, "enroll"); err != nil {
		st.Close()
		return nil, err
	}
	sys, _ := filepath.Glob("/etc/hotpatch/trusted/*.pub")
	for _, f := range append(append([]string{}, cfg.Publishers...), sys...) {
		k, err := patch.ReadPublicKey(f)
		if err != nil {
			st.Close()
			return nil, err
		}
		s.publishers = append(s.publishers, k)
	}
	return s, nil
}

// roleEnroll is the role of the enrollment token (it can only enroll).
const roleEnroll = "enroll"

// firstToken reads the token file, or on the first start makes the token,
// stores its hash and writes the file (0600).
func (s *Server) firstToken(ctx context.Context, file, role, name string) (string, error) {
	path := filepath.Join(s.cfg.DataDir, file)
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if _, err := s.st.TokenByHash(ctx, pki.TokenHash(tok)); err != nil {
			return "", fmt.Errorf("%s is not a token this server knows (%v); remove it to make a new one", path, err)
		}
		return tok, nil
	}
	tok, hash := pki.NewToken()
	if err := s.st.AddToken(ctx, store.Token{Hash: hash, Role: role, Name: name}); err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, os.Rename(tmp, path)
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
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(handshakeFilter{os.Stderr}, "", log.LstdFlags),
	}
	go s.http.ServeTLS(ln, "", "")
	go s.drive()
	go s.watchChanges()
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
			s.wake(n)
		}
		if s.metrics.streams.Load() > 0 {
			if v, err := s.st.Version(context.Background()); err == nil && v != version {
				if version != "" {
					s.touch()
				}
				version = v
			}
		}
	}
}

// wake records the change counter and, if it moved, wakes the long-polls.
func (s *Server) wake(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == s.seq {
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

// AdminToken is the first admin token (DataDir/admin.token).
func (s *Server) AdminToken() string { return s.adminToken }

// EnrollToken is the enrollment token (DataDir/enroll.token).
func (s *Server) EnrollToken() string { return s.enrollTok }

// Close stops serving (long-polls end) and closes the store.
func (s *Server) Close() error {
	close(s.stop)
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.http.Shutdown(ctx)
		<-s.done
	}
	return s.st.Close()
}

// notify moves the change counter (devices' desired state may have
// changed) and wakes the long-polls here; other replicas see it within
// a tick.
func (s *Server) notify() {
	if n, err := s.st.BumpChange(context.Background()); err == nil {
		s.wake(n)
	}
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
