//go:build linux

// Package pgtest starts a throwaway PostgreSQL server for tests: a new
// cluster in a temporary directory, on a free port of 127.0.0.1, owned by
// the test and stopped with it. It uses the PostgreSQL binaries of the
// machine (Debian's postgresql package; scripts/test.sh installs it).
package pgtest

import (
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
)

// RequireEnv, when set to 1 (scripts/test.sh sets it), makes a missing
// PostgreSQL a test failure instead of a skip.
const RequireEnv = "HOTPATCH_REQUIRE_POSTGRES"

var (
	once     sync.Once
	baseURL  string
	setupErr error
	server   *exec.Cmd
	tmpDir   string
)

// Stop stops the server, if one was started, and removes its files; call
// it from TestMain after m.Run.
func Stop() {
	if server != nil {
		server.Process.Signal(syscall.SIGINT) // fast shutdown
		done := make(chan struct{})
		go func() { server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			server.Process.Kill()
			<-done
		}
	}
	if tmpDir != "" {
		os.RemoveAll(tmpDir)
	}
}

// URL returns the URL of a new, empty database on the package's server,
// started on first use (it lives until Stop, or the test binary).
func URL(t testing.TB) string {
	t.Helper()
	url, err := NewDatabase()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("PostgreSQL: %v", err)
		}
		t.Skipf("PostgreSQL not available: %v", err)
	}
	return url
}

// NewDatabase is URL for programs (bench/): the URL of a new, empty
// database, or why there is none.
func NewDatabase() (string, error) {
	once.Do(func() { baseURL, setupErr = start() })
	if setupErr != nil {
		return "", setupErr
	}
	db, err := sql.Open("pgx", baseURL+"/postgres?sslmode=disable")
	if err != nil {
		return "", err
	}
	defer db.Close()
	name := fmt.Sprintf("t%d_%d", time.Now().UnixNano(), os.Getpid())
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		return "", fmt.Errorf("create database: %v", err)
	}
	return baseURL + "/" + name + "?sslmode=disable", nil
}

func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		return "", fmt.Errorf("no initdb (install Debian's postgresql package)")
	}
	return filepath.Dir(m[len(m)-1]), nil
}

// start makes a cluster and starts its server; the server is killed when
// the test binary's parent goes (Pdeathsig), so it never outlives it.
func start() (string, error) {
	bin, err := binDir()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "hotpatch-pg")
	if err != nil {
		return "", err
	}
	tmpDir = dir
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: run it as its own user.
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", fmt.Errorf("running as root and there is no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", err
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %v: %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200")
	srv.Dir = dir
	srv.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		return "", err
	}
	server = srv
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d", port)
	db, _ := sql.Open("pgx", url+"/postgres?sslmode=disable")
	defer db.Close()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if db.Ping() == nil {
			return url, nil
		}
	}
	srv.Process.Kill()
	return "", fmt.Errorf("postgres on port %d did not come up", port)
}
