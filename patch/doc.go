// Package patch defines a hotpatch patch — new machine code, data and
// relocations for one target ELF module — and its signed file format.
//
// # Place in the flow
//
//	source fix → build → *Patch → Sign → FILE.hpatch → server → agent → Load → Verify → engine
//
// The builder (package build) compares two builds of a module and returns an
// unsigned *Patch. Sign validates it and writes the signed file. Servers and
// agents store and move the file as opaque bytes, addressed by FileDigest.
// Whoever applies a patch calls Load (parse, check the signature, validate),
// then Verify (is the signer trusted here?), then hands the *Patch to the
// engine. A *Patch is inert data: nothing here needs ptrace or root.
//
// # File format
//
// A patch file is a DSSE envelope (https://github.com/secure-systems-lab/dsse)
// in compact JSON followed by one newline:
//
//	{"payloadType":"application/vnd.hotpatch.patch.v1","payload":"<base64>","signatures":[{"keyid":"<key id>","sig":"<base64>"}]}
//
// The payload is the canonical binary encoding of every field of Patch,
// including the signer's public key. Integers are little-endian; str and
// bytes are a u32 length and the bytes; list is a u32 count and the items:
//
//	magic "HPATCH\x00", version u16 (2 or 3), signer [32]byte
//	id str, version u32, cves list of str, severity u8, description str
//	target: name str, build_id bytes, arch u8, type u8
//	functions list of: name str, file str, flags u8, old_addr u64,
//	    old_size u64, old_sha256 [32]byte, new_offset u64, new_size u64
//	objects list of: name str, section u8, offset u64, size u64
//	relocs list of: section u8, offset u64, type u8, addend i64,
//	    target kind u8, indirect u8 (0 or 1), then by kind —
//	    in-patch: section u8, offset u64; in-module: addr u64;
//	    external: symbol str, version str
//	text bytes, rodata bytes, data bytes, bss_size u64, unwind bytes
//	flags u32 (version 3 only)
//
// The encoder writes version 2 when the patch has no Flags and no function
// marked FuncExported, and version 3 otherwise; the decoder reads both and
// demands that choice (see docs/patch-format.md).
//
// Arch codes are 1 x86_64, 2 aarch64; severity codes 0 none, 1 low,
// 2 medium, 3 high, 4 critical; the other enums use their Go values. Lists
// keep the order the builder gave them: the format does not sort, and the
// decoder accepts any order but demands that the decoded patch encode back
// to the same bytes. The decoder's caps: payload 64 MiB, 100000 functions,
// 100000 objects, 1000000 relocations, 256 CVEs, names 4096 bytes,
// description 64 KiB, build-id 64 bytes, id 128 bytes, bss 1 GiB.
//
// The signature is ed25519 over the DSSE pre-authentication encoding
//
//	"DSSEv1" SP len(payloadType) SP payloadType SP len(payload) SP payload
//
// with lengths in ASCII decimal. The keyid is KeyID of the signer.
//
// We use a strict profile of DSSE: exactly one signature, standard padded
// base64 only, no unknown fields, and the file must be byte for byte what
// Sign writes. (Generic DSSE consumers are asked to ignore unknown fields
// and accept URL-safe base64; hotpatch is the only producer and consumer of
// its payload type, so it refuses every spelling but one.) There is therefore one file per (patch, key) — ed25519 is
// deterministic — and FileDigest is a stable content address.
//
// # Security model
//
// Load checks self-consistency: the file is well formed and canonical, its
// keyid names the signer key carried in the payload, and the signature over
// the payload verifies with that key. Any change to any byte of a file makes
// Load fail. Before the signature is verified, Load parses only the JSON
// envelope, the base64 and the fixed payload header (magic, version, signer);
// the payload decoder runs only on signed bytes, and it is strict anyway:
// every count and length is checked against fixed caps and against the bytes
// left before anything is allocated, unknown enum values and trailing bytes
// are rejected, and the decoded patch must encode back to the same bytes.
//
// Load does not decide whether the signer is trusted: anyone can make a key
// and sign a well-formed patch. Verify(p, trusted) does, comparing the whole
// public key, and returns an *UntrustedSignerError naming the key id when
// the signer is not among the trusted keys. Never apply a patch that has not
// passed both.
//
// Validate, called by Sign and by Load, checks the patch on its own terms:
// ranges of code, objects and relocated fields within their blobs (overflow
// safe), known enums, printable names, no overlapping redirects or relocated
// fields. Whether the target process matches (build-id, the SHA-256 of each
// replaced function) is the engine's check at apply time.
//
// # Keys
//
// Keys are ed25519. WriteKeyPair writes NAME.key (PKCS#8 PEM, mode 0600) and
// NAME.pub (PKIX PEM), the formats openssl uses; ReadPrivateKey and
// ReadPublicKey read them.
//
// # Errors
//
// Errors are one line starting with "patch: ". Malformed or invalid patches
// wrap ErrFormat, signature problems wrap ErrSignature (both as *Error),
// an untrusted signer is an *UntrustedSignerError, and key file problems
// wrap ErrKeyFile.
package patch
