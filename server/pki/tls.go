package pki

import (
	"crypto/tls"
	"crypto/x509"
)

// ServerTLS returns the server's TLS configuration: TLS 1.3 only, the
// server certificate, and client certificates requested and verified
// against the CA when the client sends one (tls.VerifyClientCertIfGiven),
// so admin requests (bearer token, no certificate) and device requests
// (client certificate) share one port. A client certificate that does not
// verify fails the handshake. Each call returns a new *tls.Config.
//
// NextProtos is left empty: http.Server.ServeTLS adds "h2" and "http/1.1";
// a server that uses tls.NewListener with http.Server.Serve speaks HTTP/1.1
// unless it sets NextProtos itself.
func (c *CA) ServerTLS() (*tls.Config, error) {
	pool := x509.NewCertPool()
	pool.AddCert(c.cert)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.server},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
	}, nil
}

// ClientTLS returns the TLS configuration of a client of the server (agent
// or CLI): TLS 1.3 only, trusting only the certificates in caPEM (ca.pem),
// and, when certPEM and keyPEM are given, presenting that client
// certificate. Give both or neither. The server name is taken from the URL
// by net/http.
func ClientTLS(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, invalidError(nil, "no CA certificate in the PEM given; pass the server's %s", CACertFile)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if len(certPEM) == 0 && len(keyPEM) == 0 {
		return cfg, nil
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, invalidError(nil, "client certificate and key must be given together")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, invalidError(err, "client certificate")
	}
	cfg.Certificates = []tls.Certificate{pair}
	return cfg, nil
}
