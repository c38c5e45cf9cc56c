package patch

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
)

// Bounds of the payload decoder. They are far above what a real patch
// needs and low enough that a hostile file cannot make Load allocate much
// more than its own size.
const (
	maxPayload     = 64 << 20 // bytes of canonical payload
	maxFunctions   = 100_000
	maxObjects     = 100_000
	maxRelocs      = 1_000_000
	maxCVEs        = 256
	maxString      = 4096     // names, files, symbols, versions, target name
	maxDescription = 64 << 10 // Patch.Description
	maxBuildID     = 64
	maxID          = 128
	maxBSS         = 1 << 30
	maxUnwind      = 4 << 20 // bytes of call frame information
)

// headerSize is the size of the fixed header: magic, version, signer.
const headerSize = len(payloadMagic) + 2 + ed25519.PublicKeySize

// payloadSigner returns the signer key from the fixed header of a payload.
// It is all Load reads of a payload before the signature is verified.
func payloadSigner(payload []byte) (PublicKey, error) {
	d := &decoder{b: payload}
	if err := d.header(); err != nil {
		return nil, err
	}
	return PublicKey(bytes.Clone(payload[len(payloadMagic)+2 : headerSize])), nil
}

// decodePayload parses a canonical payload, validates the patch and checks
// that encoding it again gives the same bytes. Every failure wraps ErrFormat.
func decodePayload(payload []byte) (*Patch, error) {
	if len(payload) > maxPayload {
		return nil, formatErrorf("payload is %d bytes, more than the limit of %d", len(payload), maxPayload)
	}
	d := &decoder{b: payload}
	if err := d.header(); err != nil {
		return nil, err
	}
	version := binary.LittleEndian.Uint16(payload[len(payloadMagic):])
	p := &Patch{Signer: PublicKey(bytes.Clone(payload[len(payloadMagic)+2 : headerSize]))}

	p.ID = d.str("id", maxID)
	p.Version = d.u32("version")
	if n := d.count("cves", maxCVEs, minStringSize); n > 0 {
		p.CVEs = make([]string, n)
		for i := range p.CVEs {
			p.CVEs[i] = d.str("cve", maxString)
		}
	}
	if c := d.u8("severity"); d.err == nil {
		if int(c) >= len(severityCodes) {
			d.fail("unknown severity code %d", c)
		} else {
			p.Severity = severityCodes[c]
		}
	}
	p.Description = d.str("description", maxDescription)

	p.Target.Name = d.str("target name", maxString)
	p.Target.BuildID = d.bytes("target build-id", maxBuildID)
	if c := d.u8("target arch"); d.err == nil {
		if c == 0 || int(c) >= len(archCodes) {
			d.fail("unknown arch code %d", c)
		} else {
			p.Target.Arch = archCodes[c]
		}
	}
	if t := ModuleType(d.u8("target type")); d.err == nil {
		if t < Executable || t > SharedObject {
			d.fail("unknown module type %d", t)
		}
		p.Target.Type = t
	}

	if n := d.count("functions", maxFunctions, minFunctionSize); n > 0 {
		p.Functions = make([]Function, n)
		for i := range p.Functions {
			f := &p.Functions[i]
			f.Name = d.str("function name", maxString)
			f.File = d.str("function file", maxString)
			f.Flags = FuncFlags(d.u8("function flags"))
			if d.err == nil && (f.Flags&^knownFuncFlags != 0 || version < 3 && f.Flags&FuncExported != 0) {
				d.fail("function %d has unknown flags %#x", i, uint8(f.Flags))
			}
			f.OldAddr = d.u64("function old address")
			f.OldSize = d.u64("function old size")
			if b := d.fixed("function old sha256", 32); b != nil {
				copy(f.OldSHA256[:], b)
			}
			f.NewOffset = d.u64("function new offset")
			f.NewSize = d.u64("function new size")
		}
	}

	if n := d.count("objects", maxObjects, minObjectSize); n > 0 {
		p.Objects = make([]Object, n)
		for i := range p.Objects {
			o := &p.Objects[i]
			o.Name = d.str("object name", maxString)
			o.Section = d.section("object section")
			o.Offset = d.u64("object offset")
			o.Size = d.u64("object size")
		}
	}

	if n := d.count("relocations", maxRelocs, minRelocSize); n > 0 {
		p.Relocs = make([]Reloc, n)
		for i := range p.Relocs {
			r := &p.Relocs[i]
			r.Section = d.section("relocation section")
			r.Offset = d.u64("relocation offset")
			if t := RelocType(d.u8("relocation type")); d.err == nil {
				if t < PC32 || t > Abs32S {
					d.fail("relocation %d has unknown type %d", i, t)
				}
				r.Type = t
			}
			r.Addend = int64(d.u64("relocation addend"))
			r.Target.Kind = TargetKind(d.u8("relocation target kind"))
			r.Target.Indirect = d.bool("relocation indirect flag")
			if d.err != nil {
				break
			}
			switch r.Target.Kind {
			case InPatch:
				r.Target.Section = d.section("relocation target section")
				r.Target.Offset = d.u64("relocation target offset")
			case InModule:
				r.Target.Addr = d.u64("relocation target address")
			case External:
				r.Target.Symbol = d.str("relocation symbol", maxString)
				r.Target.Version = d.str("relocation symbol version", maxString)
			default:
				d.fail("relocation %d has unknown target kind %d", i, r.Target.Kind)
			}
		}
	}

	p.Text = d.bytes("text", maxPayload)
	p.ROData = d.bytes("rodata", maxPayload)
	p.Data = d.bytes("data", maxPayload)
	p.BSSSize = d.u64("bss size")
	p.Unwind = d.bytes("unwind", maxUnwind)
	if version >= 3 {
		p.Flags = Flags(d.u32("patch flags"))
		if d.err == nil && p.Flags&^knownFlags != 0 {
			d.fail("unknown patch flags %#x", uint32(p.Flags&^knownFlags))
		}
	}

	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(d.b) {
		return nil, formatErrorf("payload has %d trailing bytes at offset %d", len(d.b)-d.off, d.off)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	again, err := encodePayload(p)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, payload) {
		// Unreachable while the decoder is as strict as the encoder; kept
		// so that a future lenient field cannot make two payloads mean
		// the same patch.
		return nil, formatErrorf("payload is not in canonical form")
	}
	return p, nil
}

// decoder reads little-endian values from b. The first failure is kept in
// err; later reads return zero values, so callers check err once at the end
// (and before any allocation sized by the input, which count does).
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = formatErrorf("payload offset %d: "+format, append([]any{d.off}, args...)...)
	}
}

// take returns the next n bytes, or nil (setting err) if fewer are left.
func (d *decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.err = formatErrorf("truncated payload at offset %d: %s needs %d bytes, %d left", d.off, what, n, len(d.b)-d.off)
		return nil
	}
	b := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

func (d *decoder) header() error {
	if len(d.b) < len(payloadMagic) || string(d.b[:len(payloadMagic)]) != payloadMagic {
		return formatErrorf("payload does not start with the hotpatch magic %q", payloadMagic)
	}
	d.off = len(payloadMagic)
	if v := d.u16("format version"); d.err == nil && (v < minVersion || v > formatVersion) {
		return formatErrorf("payload format version %d is not supported (this hotpatch reads versions %d to %d; a newer hotpatch may read it)", v, minVersion, formatVersion)
	}
	d.take(ed25519.PublicKeySize, "signer key")
	return d.err
}

func (d *decoder) u8(what string) uint8 {
	if b := d.take(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16(what string) uint16 {
	if b := d.take(2, what); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32(what string) uint32 {
	if b := d.take(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64(what string) uint64 {
	if b := d.take(8, what); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) fixed(what string, n int) []byte { return d.take(n, what) }

func (d *decoder) bool(what string) bool {
	switch v := d.u8(what); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.off--
		d.fail("%s is %d, want 0 or 1", what, v)
		return false
	}
}

func (d *decoder) section(what string) Section {
	s := Section(d.u8(what))
	if d.err == nil && (s < Text || s > BSS) {
		d.off--
		d.fail("%s has unknown section %d", what, s)
	}
	return s
}

// length reads a u32 length and checks it against limit and the bytes left.
func (d *decoder) length(what string, limit int) int {
	start := d.off
	n := d.u32(what + " length")
	if d.err != nil {
		return 0
	}
	if uint64(n) > uint64(limit) {
		d.off = start
		d.fail("%s is %d bytes long, more than the limit of %d", what, n, limit)
		return 0
	}
	return int(n)
}

func (d *decoder) str(what string, limit int) string {
	n := d.length(what, limit)
	return string(d.take(n, what))
}

// bytes returns a copy of a length-prefixed byte string, nil when empty.
func (d *decoder) bytes(what string, limit int) []byte {
	n := d.length(what, limit)
	b := d.take(n, what)
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}

// count reads a list count and checks it against limit and against the
// bytes left, at minItem bytes per item, before the caller allocates.
func (d *decoder) count(what string, limit, minItem int) int {
	start := d.off
	n := d.u32(what + " count")
	if d.err != nil {
		return 0
	}
	if uint64(n) > uint64(limit) {
		d.off = start
		d.fail("%d %s, more than the limit of %d", n, what, limit)
		return 0
	}
	if left := len(d.b) - d.off; uint64(n)*uint64(minItem) > uint64(left) {
		d.err = formatErrorf("truncated payload at offset %d: %d %s need at least %d bytes, %d left", d.off, n, what, uint64(n)*uint64(minItem), left)
		return 0
	}
	return int(n)
}
