package pki

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzIssue feeds untrusted bytes, as a device sends them at enrollment, to
// Issue. Whatever it accepts must come out as a device certificate for the
// CSR's key and the id given, and nothing else. Seeds are added here and
// kept under testdata/fuzz/FuzzIssue, with any crashers found.
func FuzzIssue(f *testing.F) {
	ca, err := Init(f.TempDir(), nil)
	if err != nil {
		f.Fatal(err)
	}
	key, _, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	good, err := CSR(key, "dev")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(ca.CertPEM())
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))

	f.Fuzz(func(t *testing.T, csrPEM []byte) {
		certPEM, serial, err := ca.Issue(csrPEM, "dev-1")
		if err != nil {
			return
		}
		block, _ := pem.Decode(csrPEM)
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			t.Fatalf("Issue accepted a CSR that does not parse: %v", err)
		}
		block, _ = pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		type summary struct {
			CN, Serial string
			EKU        []x509.ExtKeyUsage
			DNS        []string
			IsCA       bool
			SameKey    bool
		}
		got := summary{cert.Subject.CommonName, serialHex(cert.SerialNumber), cert.ExtKeyUsage, cert.DNSNames, cert.IsCA,
			samePublic(cert.PublicKey, csr.PublicKey)}
		want := summary{CN: "dev-1", Serial: serial, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, SameKey: true}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("issued certificate (-want +got):\n%s", diff)
		}
	})
}

func samePublic(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
