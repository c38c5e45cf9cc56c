package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Validity periods and the backdating of NotBefore, which absorbs clock
// skew between the server and the devices.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 365 * 24 * time.Hour
	deviceValidity = 365 * 24 * time.Hour
	backdate       = time.Hour
)

// defaultHosts are always in the server certificate.
var defaultHosts = []string{"127.0.0.1", "::1", "localhost"}

// CA is a loaded data directory: the CA certificate and key, and the
// server's certificate and key. It is immutable and safe for concurrent use.
type CA struct {
	dir     string
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	server  tls.Certificate
}

// Init creates in dir (mode 0700 if it must be made) the files that are
// missing — ca.key and ca.pem (ECDSA P-256, self-signed, 10 years), then
// server.key and server.pem (signed by the CA, 1 year, SANs 127.0.0.1, ::1,
// localhost and hosts) — and returns the loaded CA. Existing files are
// loaded, never overwritten. hosts are DNS names (a leading "*." is
// allowed) or IP addresses, without ports.
//
// Init fails if a certificate exists without its key, or if an existing
// server certificate does not cover one of hosts; the error says which files
// to restore or remove.
func Init(dir string, hosts []string) (*CA, error) {
	dnsNames, ips, err := parseHosts(hosts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, dirError("", err, "cannot create data directory")
	}
	caKey, caCert := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	if err := ensurePair(caKey, caCert, "every enrolled device must then enroll again", func(key crypto.Signer) ([]byte, error) {
		return selfSign(key)
	}); err != nil {
		return nil, err
	}
	ca, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	srvKey, srvCert := filepath.Join(dir, ServerKeyFile), filepath.Join(dir, ServerCertFile)
	if err := ensurePair(srvKey, srvCert, "clients keep trusting the new one", func(key crypto.Signer) ([]byte, error) {
		return ca.signServer(key.Public(), dnsNames, ips)
	}); err != nil {
		return nil, err
	}
	c, err := Load(dir)
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		h = trimHost(h)
		if err := c.server.Leaf.VerifyHostname(h); err != nil {
			return nil, dirError(srvCert, nil, "does not cover host %q; remove %s and %s to issue a new server certificate (clients keep trusting %s)",
				h, ServerCertFile, ServerKeyFile, CACertFile)
		}
	}
	return c, nil
}

// ensurePair makes sure a key file and its certificate exist: it writes a
// new ECDSA P-256 key if the key is missing, then, if the certificate is
// missing, certifies the key on disk (whoever wrote it) with makeCert.
// A certificate without its key is an error; consequence says what making
// a new pair would mean.
func ensurePair(keyPath, certPath, consequence string, makeCert func(crypto.Signer) ([]byte, error)) error {
	haveKey, err := exists(keyPath)
	if err != nil {
		return err
	}
	haveCert, err := exists(certPath)
	if err != nil {
		return err
	}
	if haveCert && !haveKey {
		return dirError(keyPath, nil, "missing, but %s exists; restore %s from a backup, or move %s away to make a new pair (%s)",
			filepath.Base(certPath), filepath.Base(keyPath), filepath.Base(certPath), consequence)
	}
	if !haveKey {
		_, keyPEM, err := NewKey()
		if err != nil {
			return err
		}
		if _, err := writeNew(keyPath, keyPEM, keyMode); err != nil {
			return err
		}
	}
	if haveCert {
		return nil
	}
	key, err := readKey(keyPath) // the file on disk wins a race
	if err != nil {
		return err
	}
	der, err := makeCert(key)
	if err != nil {
		return err
	}
	_, err = writeNew(certPath, encodePEM(pemCert, der), certMode)
	return err
}

// Load loads the data directory that Init made, and checks it: each key
// matches its certificate, ca.pem is a CA certificate, server.pem was
// issued by it for server authentication, and neither has expired.
func Load(dir string) (*CA, error) {
	c, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	keyPath, certPath := filepath.Join(dir, ServerKeyFile), filepath.Join(dir, ServerCertFile)
	cert, err := readCert(certPath)
	if err != nil {
		return nil, err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, err
	}
	if !samePublicKey(key, cert.PublicKey) {
		return nil, dirError(keyPath, nil, "does not match %s; restore the right key, or remove both to issue a new server certificate", ServerCertFile)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.cert)
	now := time.Now()
	if now.After(cert.NotAfter) {
		return nil, dirError(certPath, nil, "expired on %s; remove %s and %s to issue a new server certificate (clients keep trusting %s)",
			cert.NotAfter.UTC().Format(time.DateOnly), ServerCertFile, ServerKeyFile, CACertFile)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, dirError(certPath, err, "not a server certificate of %s; remove %s and %s to issue a new one", CACertFile, ServerCertFile, ServerKeyFile)
	}
	c.server = tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	return c, nil
}

// loadCA loads and checks ca.pem and ca.key.
func loadCA(dir string) (*CA, error) {
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile)
	cert, err := readCert(certPath)
	if err != nil {
		return nil, err
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, dirError(certPath, nil, "not a CA certificate (needs basic constraints CA:TRUE and key usage certSign)")
	}
	if now := time.Now(); now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
		return nil, dirError(certPath, nil, "not valid now (valid %s to %s); check the clock, or make a new CA",
			cert.NotBefore.UTC().Format(time.DateOnly), cert.NotAfter.UTC().Format(time.DateOnly))
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, err
	}
	if !samePublicKey(key, cert.PublicKey) {
		return nil, dirError(keyPath, nil, "does not match %s; restore the right key from a backup", CACertFile)
	}
	return &CA{dir: dir, cert: cert, certPEM: encodePEM(pemCert, cert.Raw), key: key}, nil
}

// CertPEM returns the CA certificate in PEM: what admins and agents must
// trust (the content of ca.pem).
func (c *CA) CertPEM() []byte { return slices.Clone(c.certPEM) }

// selfSign makes the CA certificate of key.
func selfSign(key crypto.Signer) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"hotpatch"}, CommonName: "hotpatch-server CA " + serialHex(serial)[:8]},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	return der, nil
}

// signServer makes a server certificate for pub.
func (c *CA) signServer(pub crypto.PublicKey, dnsNames []string, ips []net.IP) ([]byte, error) {
	tmpl, err := c.template(serverValidity)
	if err != nil {
		return nil, err
	}
	tmpl.Subject = pkix.Name{Organization: []string{"hotpatch"}, CommonName: "hotpatch-server"}
	tmpl.DNSNames = dnsNames
	tmpl.IPAddresses = ips
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("pki: create server certificate: %w", err)
	}
	return der, nil
}

// template returns a leaf certificate template: random serial, backdated,
// valid for validity but never past the CA, digital signature only.
func (c *CA) template(validity time.Duration) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}, nil
}

// newSerial returns a random serial number of 128 bits, never zero.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("pki: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// serialHex formats a certificate serial as Issue and DeviceID return it:
// lowercase hex, zero-padded to at least 32 digits.
func serialHex(serial *big.Int) string { return fmt.Sprintf("%032x", serial) }

// parseHosts splits hosts, plus the defaults, into DNS names and IP
// addresses, without duplicates.
func parseHosts(hosts []string) (dnsNames []string, ips []net.IP, err error) {
	for _, h := range append(slices.Clone(defaultHosts), hosts...) {
		h = trimHost(h)
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		if !validDNSName(h) {
			return nil, nil, invalidError(nil, "host %q is neither a DNS name nor an IP address (give it without a port)", h)
		}
		h = strings.ToLower(h)
		if !slices.Contains(dnsNames, h) {
			dnsNames = append(dnsNames, h)
		}
	}
	return dnsNames, ips, nil
}

// trimHost removes spaces and the brackets of an IPv6 literal.
func trimHost(h string) string {
	h = strings.TrimSpace(h)
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return h
}

// validDNSName accepts host names of letters, digits and hyphens, labels of
// at most 63 bytes, at most 253 bytes in all, with an optional leading "*.".
func validDNSName(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
