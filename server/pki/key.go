package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
)

// NewKey makes an ECDSA P-256 private key and returns it with its PEM
// encoding (PKCS#8, "PRIVATE KEY"), the format of the key files and of
// ClientTLS's keyPEM. The caller stores the PEM with mode 0600.
func NewKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return key, encodePEM(pemPrivateKey, der), nil
}

// CSR returns a certificate signing request (PEM) for key, with CommonName
// name. The server ignores the name (it sets the device id); it only helps
// people who read the request.
func CSR(key crypto.Signer, name string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create certificate request: %w", err)
	}
	return encodePEM(pemCSR, der), nil
}
