// Package client is the HTTP client of hotpatch-server, shared by the
// hotpatch CLI ("hotpatch fleet …"), the agent's enrolled mode and the
// tests. It speaks the wire contract of server/api and imports nothing of
// the server itself.
//
// # Place in the flow
//
//	admin:  hotpatch fleet … → client (bearer token) → server
//	device: hotpatchd → client (device certificate) → Enroll, Sync, PatchFile, SendInventory, SendEvents
//
// # Connections
//
// Only https URLs are accepted. TLS is pki.ClientTLS: TLS 1.3, trusting only
// the server's CA (its ca.pem), presenting the device certificate when one
// was given with WithClientCert. Admin requests carry the token given with
// WithToken as "Authorization: Bearer …". Redirects are not followed, so a
// token never travels anywhere but to the server named.
//
// Every call takes a context. Besides it, ordinary calls are bounded by
// the client's timeout (WithTimeout, 30 s by default); file transfers
// (Publish, PatchFile) by 10 minutes; Sync by its long-poll wait plus 10 s.
//
// # Trust
//
// PatchFile checks that the file it received has the SHA-256 it asked for
// and returns a *DigestError otherwise: a compromised or broken server can
// withhold a patch, but not substitute one. (The agent still checks the
// patch's signature against its own trusted keys before applying it.)
// Answers are bounded: patch files to 64 MiB, JSON to 16 MiB.
//
// # Errors
//
// A non-2xx answer is an *Error carrying the HTTP status and the server's
// one-line message (the api.Error body; the first line of any other body);
// IsStatus tests for a status. Other errors (connection, TLS, a malformed
// answer) are wrapped with %w and start with "client: ".
package client
