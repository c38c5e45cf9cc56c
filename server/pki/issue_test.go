package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func parseCertPEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("not one PEM certificate: %q", b)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestIssue(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t)
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	// A CSR that asks for much more than it gets.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "admin", Organization: []string{"evil"}},
		DNSNames:    []string{"hotpatch.example.com"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, serial, err := ca.Issue(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCertPEM(t, certPEM)
	caCert := parseCertPEM(t, ca.CertPEM())

	type summary struct {
		Subject, Issuer string
		DNSNames        []string
		IPs             int
		ExtKeyUsage     []x509.ExtKeyUsage
		KeyUsage        x509.KeyUsage
		IsCA            bool
		Serial          string
		SameKey         bool
	}
	got := summary{
		Subject:     cert.Subject.String(),
		Issuer:      cert.Issuer.String(),
		DNSNames:    cert.DNSNames,
		IPs:         len(cert.IPAddresses),
		ExtKeyUsage: cert.ExtKeyUsage,
		KeyUsage:    cert.KeyUsage,
		IsCA:        cert.IsCA,
		Serial:      serialHex(cert.SerialNumber),
		SameKey:     key.PublicKey.Equal(cert.PublicKey),
	}
	want := summary{
		Subject:     "CN=dev-1",
		Issuer:      caCert.Subject.String(),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		Serial:      serial,
		SameKey:     true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("issued certificate (-want +got):\n%s", diff)
	}
	if len(serial) != 32 {
		t.Errorf("serial %q is not 32 hex digits", serial)
	}
	if days := cert.NotAfter.Sub(time.Now()).Hours() / 24; days < 364 || days > 366 {
		t.Errorf("certificate valid for %.1f more days, want 365", days)
	}
	if err := cert.CheckSignatureFrom(caCert); err != nil {
		t.Errorf("certificate not signed by the CA: %v", err)
	}

	// Serials differ.
	_, serial2, err := ca.Issue(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if serial2 == serial {
		t.Errorf("two certificates with serial %s", serial)
	}
}

func TestIssueRejects(t *testing.T) {
	t.Parallel()
	ca, _ := newTestCA(t)
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	good, err := CSR(key, "dev")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)

	// Flip one byte of the signature, the last bytes of the DER.
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-3] ^= 0x01
	// Flip one byte of the signed content (the subject name).
	i := strings.Index(string(block.Bytes), "dev")
	renamed := append([]byte(nil), block.Bytes...)
	renamed[i] = 'D'

	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weak, err := CSR(p224, "dev")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		csr  []byte
		id   string
		kind error
		msg  string
	}{
		{"empty", nil, "dev-1", ErrCSR, "no PEM block"},
		{"garbage", []byte("hello, world"), "dev-1", ErrCSR, "no PEM block"},
		{"certificate", ca.CertPEM(), "dev-1", ErrCSR, `PEM block is "CERTIFICATE"`},
		{"garbage DER", pemBlock("CERTIFICATE REQUEST", []byte("junk")), "dev-1", ErrCSR, "malformed"},
		{"tampered signature", pemBlock("CERTIFICATE REQUEST", tampered), "dev-1", ErrCSR, "signature does not verify"},
		{"tampered content", pemBlock("CERTIFICATE REQUEST", renamed), "dev-1", ErrCSR, "signature does not verify"},
		{"P-224 key", weak, "dev-1", ErrCSR, "curve P-224"},
		{"too big", append(good, make([]byte, maxCSR)...), "dev-1", ErrCSR, "more than"},
		{"empty id", good, "", ErrInvalid, "device id"},
		{"id with slash", good, "../x", ErrInvalid, "device id"},
		{"id with space", good, "dev 1", ErrInvalid, "device id"},
		{"long id", good, strings.Repeat("a", 65), ErrInvalid, "device id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert, serial, err := ca.Issue(tc.csr, tc.id)
			if err == nil {
				t.Fatalf("Issue succeeded: serial %s", serial)
			}
			if cert != nil || serial != "" {
				t.Errorf("Issue returned a certificate with error %v", err)
			}
			checkOneLine(t, err)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error = %q, want %v saying %q", err, tc.kind, tc.msg)
			}
		})
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
