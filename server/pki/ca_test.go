package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// newTestCA initialises a data directory in a temporary directory.
func newTestCA(t *testing.T, hosts ...string) (*CA, string) {
	t.Helper()
	dir := t.TempDir()
	ca, err := Init(dir, hosts)
	if err != nil {
		t.Fatal(err)
	}
	return ca, dir
}

func checkOneLine(t *testing.T, err error) {
	t.Helper()
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	if !strings.HasPrefix(err.Error(), "pki: ") {
		t.Errorf("error does not start with %q: %q", "pki: ", err)
	}
}

func TestInitCreatesFiles(t *testing.T) {
	t.Parallel()
	ca, dir := newTestCA(t, "hotpatch.example.com", "10.1.2.3")

	got := map[string]os.FileMode{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = info.Mode().Perm()
	}
	want := map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644, ServerKeyFile: 0o600, ServerCertFile: 0o644}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}

	onDisk, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca.CertPEM(), onDisk) {
		t.Error("CertPEM differs from ca.pem")
	}

	caCert, err := readCert(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if !caCert.IsCA || caCert.Subject.String() != caCert.Issuer.String() {
		t.Errorf("ca.pem is not a self-signed CA: subject %s, issuer %s", caCert.Subject, caCert.Issuer)
	}
	if years := caCert.NotAfter.Sub(caCert.NotBefore).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("CA validity is %.2f years, want 10", years)
	}

	srv, err := readCert(filepath.Join(dir, ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, ip := range srv.IPAddresses {
		ips = append(ips, ip.String())
	}
	if diff := cmp.Diff([]string{"localhost", "hotpatch.example.com"}, srv.DNSNames); diff != "" {
		t.Errorf("server DNS names (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"127.0.0.1", "::1", "10.1.2.3"}, ips); diff != "" {
		t.Errorf("server IPs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, srv.ExtKeyUsage); diff != "" {
		t.Errorf("server EKU (-want +got):\n%s", diff)
	}
	if err := srv.CheckSignatureFrom(caCert); err != nil {
		t.Errorf("server.pem not signed by ca.pem: %v", err)
	}
}

func TestInitTwiceLoadsSameCA(t *testing.T) {
	t.Parallel()
	first, dir := newTestCA(t)
	before := readDir(t, dir)

	second, err := Init(dir, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.CertPEM(), second.CertPEM()) {
		t.Error("second Init returned another CA certificate")
	}
	loaded, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.CertPEM(), loaded.CertPEM()) {
		t.Error("Load returned another CA certificate")
	}
	if diff := cmp.Diff(before, readDir(t, dir)); diff != "" {
		t.Errorf("second Init changed the directory (-before +after):\n%s", diff)
	}
}

// readDir returns the name and content of every file of dir.
func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return files
}

func TestInitCertWithoutKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ remove, want string }{
		{CAKeyFile, "ca.key: missing, but ca.pem exists"},
		{ServerKeyFile, "server.key: missing, but server.pem exists"},
	} {
		t.Run(tc.remove, func(t *testing.T) {
			t.Parallel()
			_, dir := newTestCA(t)
			if err := os.Remove(filepath.Join(dir, tc.remove)); err != nil {
				t.Fatal(err)
			}
			before := readDir(t, dir)
			_, err := Init(dir, nil)
			if err == nil {
				t.Fatal("Init succeeded without the key")
			}
			checkOneLine(t, err)
			if !errors.Is(err, ErrDataDir) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want ErrDataDir saying %q", err, tc.want)
			}
			if diff := cmp.Diff(before, readDir(t, dir)); diff != "" {
				t.Errorf("failed Init changed the directory (-before +after):\n%s", diff)
			}
		})
	}
}

// TestInitCompletesHalfWritten: a crash during Init leaves at worst keys
// without their certificates (keys are written first); the next Init
// certifies the keys that are there.
func TestInitCompletesHalfWritten(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		remove  []string
		sameCA  bool
		keepKey []string
	}{
		{"only ca.key", []string{CACertFile, ServerKeyFile, ServerCertFile}, false, []string{CAKeyFile}},
		{"no server", []string{ServerKeyFile, ServerCertFile}, true, []string{CAKeyFile}},
		{"no server.pem", []string{ServerCertFile}, true, []string{CAKeyFile, ServerKeyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			first, dir := newTestCA(t)
			before := readDir(t, dir)
			for _, name := range tc.remove {
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			second, err := Init(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.Equal(first.CertPEM(), second.CertPEM()); got != tc.sameCA {
				t.Errorf("same CA certificate = %v, want %v", got, tc.sameCA)
			}
			after := readDir(t, dir)
			for _, name := range tc.keepKey {
				if before[name] != after[name] {
					t.Errorf("%s was replaced", name)
				}
			}
		})
	}
}

func TestInitHosts(t *testing.T) {
	t.Parallel()
	_, dir := newTestCA(t, "a.example.com")

	_, err := Init(dir, []string{"b.example.com"})
	if err == nil {
		t.Fatal("Init accepted a host that server.pem does not cover")
	}
	checkOneLine(t, err)
	if !errors.Is(err, ErrDataDir) || !strings.Contains(err.Error(), `does not cover host "b.example.com"`) {
		t.Errorf("error = %q", err)
	}
	if _, err := Init(dir, []string{"A.example.com", "[::1]", "127.0.0.1"}); err != nil {
		t.Errorf("Init with covered hosts: %v", err)
	}

	for _, bad := range []string{"host:8443", "a b", "-x.example.com", "x..y", "http://x"} {
		_, err := Init(t.TempDir(), []string{bad})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Init(%q) error = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	_, err := Load(t.TempDir())
	if !errors.Is(err, ErrDataDir) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(empty dir) error = %v, want ErrDataDir and os.ErrNotExist", err)
	}

	// A server pair from another CA.
	_, dir := newTestCA(t)
	_, other := newTestCA(t)
	for _, name := range []string{ServerKeyFile, ServerCertFile} {
		b, err := os.ReadFile(filepath.Join(other, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err = Load(dir)
	if !errors.Is(err, ErrDataDir) || !strings.Contains(err.Error(), "not a server certificate of ca.pem") {
		t.Errorf("Load(foreign server.pem) error = %v", err)
	}

	// Keys swapped.
	_, dir = newTestCA(t)
	if err := os.Rename(filepath.Join(dir, ServerKeyFile), filepath.Join(dir, "x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, CAKeyFile), filepath.Join(dir, ServerKeyFile)); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir)
	if err == nil || !strings.Contains(err.Error(), "server.key: does not match server.pem") {
		t.Errorf("Load(wrong server.key) error = %v", err)
	}
	checkOneLine(t, err)
}

func TestParseHosts(t *testing.T) {
	t.Parallel()
	names, ips, err := parseHosts([]string{"LOCALHOST", " x.example.com ", "*.example.com", "[fe80::1]", "::1", "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"localhost", "x.example.com", "*.example.com"}, names); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	want := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("fe80::1"), net.ParseIP("10.0.0.1")}
	if len(ips) != len(want) {
		t.Fatalf("ips = %v, want %v", ips, want)
	}
	for i := range want {
		if !ips[i].Equal(want[i]) {
			t.Errorf("ips[%d] = %v, want %v", i, ips[i], want[i])
		}
	}
}

// TestInitConcurrent: servers starting at once on one directory agree on
// one CA and one server certificate.
func TestInitConcurrent(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data", "pki")
	const n = 8
	cas := make([]*CA, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { cas[i], errs[i] = Init(dir, nil) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Init %d: %v", i, errs[i])
		}
		if !bytes.Equal(cas[i].CertPEM(), cas[0].CertPEM()) {
			t.Errorf("Init %d returned another CA", i)
		}
		if !bytes.Equal(cas[i].server.Certificate[0], cas[0].server.Certificate[0]) {
			t.Errorf("Init %d returned another server certificate", i)
		}
	}
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v, want 0700", info.Mode().Perm())
	}
	if got := len(readDir(t, dir)); got != 4 {
		t.Errorf("%d files in the directory, want 4 (no temporary files left)", got)
	}
}
