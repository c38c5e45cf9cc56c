package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
)

// maxCSR bounds the PEM that Issue accepts; a CSR of a P-256 key is about
// 400 bytes.
const maxCSR = 64 << 10

// maxDeviceID is the X.509 upper bound of a CommonName.
const maxDeviceID = 64

// Issue signs the public key of a device's certificate signing request
// (PEM, "CERTIFICATE REQUEST"). It checks the CSR's signature, which proves
// that the requester holds the private key, and the key: ECDSA P-256 or
// P-384, Ed25519, or RSA of at least 2048 bits. The certificate has
// CommonName = deviceID whatever the CSR asked, client authentication as its
// only extended key usage, one year of validity (never past the CA's) and a
// random 128-bit serial; nothing else from the CSR is copied. It returns
// the certificate in PEM and its serial in lowercase hex, the form DeviceID
// returns.
//
// deviceID must be 1 to 64 bytes of ASCII letters, digits, '.', '_' and '-'.
func (c *CA) Issue(csrPEM []byte, deviceID string) (certPEM []byte, serial string, err error) {
	if err := checkDeviceID(deviceID); err != nil {
		return nil, "", err
	}
	if len(csrPEM) > maxCSR {
		return nil, "", csrError(nil, "%d bytes, more than the %d allowed", len(csrPEM), maxCSR)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, "", csrError(nil, "no PEM block")
	}
	if block.Type != pemCSR && block.Type != pemCSROld {
		return nil, "", csrError(nil, "PEM block is %q, want %q", block.Type, pemCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, "", csrError(err, "malformed")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", csrError(err, "signature does not verify")
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, "", err
	}
	tmpl, err := c.template(deviceValidity)
	if err != nil {
		return nil, "", err
	}
	tmpl.Subject = pkix.Name{CommonName: deviceID}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return nil, "", fmt.Errorf("pki: create device certificate: %w", err)
	}
	return encodePEM(pemCert, der), serialHex(tmpl.SerialNumber), nil
}

// checkPublicKey accepts the key types and sizes that Issue certifies.
func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return csrError(nil, "ECDSA key on curve %s; use P-256 or P-384", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return nil
		}
		return csrError(nil, "RSA key of %d bits; use at least 2048", k.N.BitLen())
	default:
		return csrError(nil, "unsupported key type %T; use ECDSA P-256", pub)
	}
}

// checkDeviceID enforces the device id alphabet: it becomes a CommonName,
// and appears in file names, logs and URLs.
func checkDeviceID(id string) error {
	if id == "" || len(id) > maxDeviceID {
		return invalidError(nil, "device id %q must be 1 to %d bytes", id, maxDeviceID)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return invalidError(nil, "device id %q has %q; use ASCII letters, digits, '.', '_' and '-'", id, r)
		}
	}
	return nil
}

// DeviceID returns the device id (CommonName) and serial (lowercase hex, as
// Issue returns it) of the verified client certificate of a connection made
// with ServerTLS, typically r.TLS. It returns ErrNoClientCert when the
// client sent no certificate (admins, anonymous clients) or state is nil.
//
// Only certificates verified against the CA count (state.VerifiedChains);
// whether the device is revoked is the caller's check, against the store.
func DeviceID(state *tls.ConnectionState) (id, serial string, err error) {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", "", ErrNoClientCert
	}
	leaf := state.VerifiedChains[0][0]
	id = leaf.Subject.CommonName
	if err := checkDeviceID(id); err != nil {
		return "", "", err
	}
	return id, serialHex(leaf.SerialNumber), nil
}
