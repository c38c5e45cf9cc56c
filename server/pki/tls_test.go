package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// testServer serves HTTPS on 127.0.0.1 with ca.ServerTLS; its handler
// answers with the DeviceID of the request or "anonymous". It returns the
// base URL and a count of the requests that reached the handler.
func testServer(t *testing.T, ca *CA) (url string, served *atomic.Int64) {
	t.Helper()
	cfg, err := ca.ServerTLS()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served = new(atomic.Int64)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			served.Add(1)
			id, serial, err := DeviceID(r.TLS)
			switch {
			case errors.Is(err, ErrNoClientCert):
				fmt.Fprint(w, "anonymous")
			case err != nil:
				http.Error(w, err.Error(), http.StatusForbidden)
			default:
				fmt.Fprintf(w, "%s %s", id, serial)
			}
		}),
		ErrorLog: log.New(io.Discard, "", 0), // handshake failures are expected
	}
	go func() { _ = srv.Serve(tls.NewListener(ln, cfg)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String() + "/", served
}

// get makes one request with a client of its own and returns the body and
// the negotiated TLS version.
func get(t *testing.T, url string, cfg *tls.Config) (body string, version uint16, err error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(url)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("status %s: %s", resp.Status, b)
	}
	return string(b), resp.TLS.Version, nil
}

// enroll makes a key and has ca issue it a certificate for id.
func enroll(t *testing.T, ca *CA, id string) (certPEM, keyPEM []byte, serial string) {
	t.Helper()
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := CSR(key, "whatever-the-agent-says")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, serial, err = ca.Issue(csr, id)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, serial
}

func clientTLS(t *testing.T, caPEM, certPEM, keyPEM []byte) *tls.Config {
	t.Helper()
	cfg, err := ClientTLS(caPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// alwaysSendCert makes cfg present its certificate whatever CAs the server
// asks for.
func alwaysSendCert(cfg *tls.Config) *tls.Config {
	cert := cfg.Certificates[0]
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return cfg
}

func TestTLS(t *testing.T) {
	t.Parallel()
	ca, dir := newTestCA(t)
	other, _ := newTestCA(t)
	url, served := testServer(t, ca)

	devCert, devKey, devSerial := enroll(t, ca, "dev-1")
	foreignCert, foreignKey, _ := enroll(t, other, "dev-1")
	serverCert, err := os.ReadFile(filepath.Join(dir, ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	serverKey, err := os.ReadFile(filepath.Join(dir, ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}

	tls12 := clientTLS(t, ca.CertPEM(), nil, nil)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
		want string // body; "" means the handshake must fail
	}{
		{"anonymous", clientTLS(t, ca.CertPEM(), nil, nil), "anonymous"},
		{"device", clientTLS(t, ca.CertPEM(), devCert, devKey), "dev-1 " + devSerial},
		// The server lists its CA in the certificate request; a Go client
		// whose certificate has another issuer does not send it, and is
		// anonymous. One that sends it anyway fails the handshake.
		{"device of another CA, not sent", clientTLS(t, ca.CertPEM(), foreignCert, foreignKey), "anonymous"},
		{"device of another CA, sent", alwaysSendCert(clientTLS(t, ca.CertPEM(), foreignCert, foreignKey)), ""},
		{"server certificate as client certificate", alwaysSendCert(clientTLS(t, ca.CertPEM(), serverCert, serverKey)), ""},
		{"client trusts another CA", clientTLS(t, other.CertPEM(), nil, nil), ""},
		{"client with the system roots", &tls.Config{MinVersion: tls.VersionTLS13}, ""},
		{"TLS 1.2", tls12, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := served.Load()
			body, version, err := get(t, url, tc.cfg)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("request succeeded with %q, want a handshake failure", body)
				}
				t.Logf("failed as expected: %v", err)
				if n := served.Load() - before; n != 0 {
					t.Errorf("the handler served %d requests, want 0", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if body != tc.want {
				t.Errorf("body = %q, want %q", body, tc.want)
			}
			if version != tls.VersionTLS13 {
				t.Errorf("TLS version = %s, want TLS 1.3", tls.VersionName(version))
			}
		})
	}
}

func TestClientTLSErrors(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t)
	cert, key, _ := enroll(t, ca, "dev-1")
	_, otherKey, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name            string
		caPEM, cert, ky []byte
	}{
		{"no CA", nil, nil, nil},
		{"garbage CA", []byte("not pem"), nil, nil},
		{"cert without key", ca.CertPEM(), cert, nil},
		{"key without cert", ca.CertPEM(), nil, key},
		{"key of another cert", ca.CertPEM(), cert, otherKey},
	} {
		_, err := ClientTLS(tc.caPEM, tc.cert, tc.ky)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error = %v, want ErrInvalid", tc.name, err)
		}
	}
}

func TestDeviceIDWithoutCert(t *testing.T) {
	t.Parallel()
	for _, state := range []*tls.ConnectionState{nil, {}, {VerifiedChains: [][]*x509.Certificate{{}}}} {
		if _, _, err := DeviceID(state); !errors.Is(err, ErrNoClientCert) {
			t.Errorf("DeviceID(%v) error = %v, want ErrNoClientCert", state, err)
		}
	}
}
