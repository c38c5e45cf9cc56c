// Package pki is the certificate authority of hotpatch-server: it creates and
// loads the server's data directory of keys and certificates, issues device
// client certificates from certificate signing requests, builds the TLS
// configurations of the server and of its clients, and makes the random
// tokens (enrollment, admin) whose hashes the server stores.
//
// It is not the server's alone: the agent (hotpatchd) uses it to make its
// key and certificate signing request and its client TLS configuration,
// and the client package (the CLI, the agent and the tests) its client TLS
// configuration. It lives under server/ because the server is the
// authority; it imports nothing of the server.
//
// # Place in the flow
//
//	hotpatch-server start → Init(DIR) → ServerTLS → one HTTPS port
//	agent: NewKey → CSR → POST /v1/enroll (token) → server: Issue → cert → ClientTLS
//	admin CLI: ClientTLS(DIR/ca.pem) + bearer token
//	server handler: DeviceID(r.TLS) → store lookup (revoked?) → device request
//
// # Data directory
//
// Init creates, when they are missing, and then loads:
//
//	ca.key      CA private key, ECDSA P-256, PKCS#8 PEM, mode 0600
//	ca.pem      self-signed CA certificate, 10 years, mode 0644
//	server.key  server private key, ECDSA P-256, PKCS#8 PEM, mode 0600
//	server.pem  server certificate signed by the CA, 1 year, mode 0644,
//	            SANs 127.0.0.1, ::1, localhost and the hosts given to Init
//
// Existing files are loaded and never overwritten. Each file is written
// under a temporary name, synced, and then linked to its final name, which
// fails if the name exists; so a file is either complete or absent, and two
// servers initialising the same directory at once end up using the same
// files. A key is always written before its certificate. A crash therefore
// leaves at worst a key without its certificate, which the next Init
// completes (it certifies the existing key). A certificate without its key
// is never made by Init: it means the key was lost or moved, and Init fails
// with an error that says so instead of making a new key, because a new CA
// key would orphan every enrolled device.
//
// Load checks the set: each key matches its certificate, the CA certificate
// is a CA, the server certificate was issued by it for server
// authentication, and neither has expired. The server certificate is not
// renewed automatically: when it expires, or when Init is given a host it
// does not cover, the error says to remove server.pem and server.key, and
// the next Init issues a new pair from the same CA, which clients already
// trust. Nothing in the directory is ever deleted by this package.
//
// Hand-made files are accepted too: a CA certificate with any key type that
// crypto/x509 can sign with (PKCS#8 or SEC1 "EC PRIVATE KEY" PEM), provided
// it is the certificate clients are given as ca.pem.
//
// # TLS
//
// Every configuration is TLS 1.3 only. The server requests a client
// certificate and verifies it against the CA when one is sent
// (tls.VerifyClientCertIfGiven), so admins (bearer token, no certificate) and
// devices (client certificate) share one port; DeviceID reads the device id
// (the certificate's CommonName) and serial from a verified connection.
//
// # Device certificates
//
// Issue checks the CSR's self-signature (proof that the requester holds the
// private key, which never leaves the device) and signs its public key into
// a certificate whose content the CA alone decides: CommonName = the device
// id, client authentication only, one year (never past the CA's expiry),
// backdated one hour for clock skew, a random 128-bit serial. Nothing the CSR
// asks for (subject, names, extensions) is copied.
//
// Revocation is not handled here: there is no CRL or OCSP. The server's
// store keeps each device's certificate serial and revoked flag and is
// checked on every device request, so a revocation takes effect at once.
// A revoked device's certificate still completes the TLS handshake; the
// request handler must refuse it.
//
// # Tokens
//
// NewToken returns a random token and its TokenHash; the server keeps only
// hashes, and compares them with EqualHash, in constant time.
//
// # Errors
//
// Errors are one line starting with "pki: ". Problems with the data
// directory wrap ErrDataDir, bad certificate requests ErrCSR, bad arguments
// (device id, host names, client key pairs) ErrInvalid, and a connection
// without a verified client certificate is ErrNoClientCert.
package pki
