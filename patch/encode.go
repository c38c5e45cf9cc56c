package patch

import (
	"crypto/ed25519"
	"encoding/binary"
	"math"
)

// The canonical payload starts with payloadMagic and the format version.
// The encoder writes the lowest version that can hold the patch: version 2
// for a patch without Flags or FuncExported (byte for byte what earlier
// releases wrote, so they still read it), version 3 otherwise (a reader that
// only knows version 2 then refuses the file by its version, rather than
// missing a flag such as FlagStartupOnly).
const (
	payloadMagic  = "HPATCH\x00"
	formatVersion = 3 // the newest version this package reads and writes
	minVersion    = 2 // the oldest version it reads
)

// payloadVersion is the format version encodePayload writes for p.
func payloadVersion(p *Patch) uint16 {
	if p.Flags != 0 {
		return 3
	}
	for i := range p.Functions {
		if p.Functions[i].Flags&FuncExported != 0 {
			return 3
		}
	}
	return 2
}

// archCodes and severityCodes give the one-byte codes of the string enums
// in the payload: the index is the code. Code 0 of Arch is invalid.
var (
	archCodes     = [...]Arch{1: ArchX86_64, 2: ArchARM64}
	severityCodes = [...]Severity{0: SeverityNone, 1: SeverityLow, 2: SeverityMedium, 3: SeverityHigh, 4: SeverityCritical}
)

func archCode(a Arch) (uint8, bool) {
	for i, x := range archCodes {
		if i != 0 && x == a {
			return uint8(i), true
		}
	}
	return 0, false
}

func severityCode(s Severity) (uint8, bool) {
	for i, x := range severityCodes {
		if x == s {
			return uint8(i), true
		}
	}
	return 0, false
}

// Wire sizes of the fixed parts of list items, used by the decoder to check
// a count against the bytes left before it allocates anything.
const (
	minFunctionSize = 4 + 4 + 1 + 8 + 8 + 32 + 8 + 8 // name, file, flags, old addr/size/sha, new offset/size
	minObjectSize   = 4 + 1 + 8 + 8                  // name, section, offset, size
	minRelocSize    = 1 + 8 + 1 + 8 + 1 + 1 + 8      // section, offset, type, addend, kind, indirect, smallest target body
	minStringSize   = 4
)

// encodePayload returns the canonical encoding of p, the bytes that are
// signed, in the layout given in the package documentation. It checks only
// what it needs to produce the bytes (enum codes, signer length, lengths
// that fit in a u32); Validate checks the rest.
func encodePayload(p *Patch) ([]byte, error) {
	if len(p.Signer) != ed25519.PublicKeySize {
		return nil, formatErrorf("signer key is %d bytes, want %d", len(p.Signer), ed25519.PublicKeySize)
	}
	arch, ok := archCode(p.Target.Arch)
	if !ok {
		return nil, formatErrorf("unknown target arch %q", p.Target.Arch)
	}
	sev, ok := severityCode(p.Severity)
	if !ok {
		return nil, formatErrorf("unknown severity %q", p.Severity)
	}
	size := 64 + len(p.ID) + len(p.Description) + len(p.Target.Name) + len(p.Target.BuildID) +
		len(p.Functions)*minFunctionSize + len(p.Objects)*minObjectSize + len(p.Relocs)*(minRelocSize+8) +
		len(p.Text) + len(p.ROData) + len(p.Data)
	e := &encoder{buf: make([]byte, 0, size)}
	e.buf = append(e.buf, payloadMagic...)
	version := payloadVersion(p)
	e.u16(version)
	e.buf = append(e.buf, p.Signer...)

	e.str(p.ID)
	e.u32(p.Version)
	e.count(len(p.CVEs))
	for _, c := range p.CVEs {
		e.str(c)
	}
	e.u8(sev)
	e.str(p.Description)

	e.str(p.Target.Name)
	e.bytes(p.Target.BuildID)
	e.u8(arch)
	e.u8(uint8(p.Target.Type))

	e.count(len(p.Functions))
	for i := range p.Functions {
		f := &p.Functions[i]
		e.str(f.Name)
		e.str(f.File)
		e.u8(uint8(f.Flags))
		e.u64(f.OldAddr)
		e.u64(f.OldSize)
		e.buf = append(e.buf, f.OldSHA256[:]...)
		e.u64(f.NewOffset)
		e.u64(f.NewSize)
	}

	e.count(len(p.Objects))
	for _, o := range p.Objects {
		e.str(o.Name)
		e.u8(uint8(o.Section))
		e.u64(o.Offset)
		e.u64(o.Size)
	}

	e.count(len(p.Relocs))
	for i := range p.Relocs {
		r := &p.Relocs[i]
		e.u8(uint8(r.Section))
		e.u64(r.Offset)
		e.u8(uint8(r.Type))
		e.u64(uint64(r.Addend))
		e.u8(uint8(r.Target.Kind))
		e.bool(r.Target.Indirect)
		switch r.Target.Kind {
		case InPatch:
			e.u8(uint8(r.Target.Section))
			e.u64(r.Target.Offset)
		case InModule:
			e.u64(r.Target.Addr)
		case External:
			e.str(r.Target.Symbol)
			e.str(r.Target.Version)
		default:
			return nil, formatErrorf("relocation %d: unknown target kind %d", i, r.Target.Kind)
		}
	}

	e.bytes(p.Text)
	e.bytes(p.ROData)
	e.bytes(p.Data)
	e.u64(p.BSSSize)
	e.bytes(p.Unwind)
	if version >= 3 {
		e.u32(uint32(p.Flags))
	}

	if e.err != nil {
		return nil, e.err
	}
	if len(e.buf) > maxPayload {
		return nil, formatErrorf("payload is %d bytes, more than the limit of %d", len(e.buf), maxPayload)
	}
	return e.buf, nil
}

// encoder appends little-endian values to buf; err records a length that
// does not fit in the format.
type encoder struct {
	buf []byte
	err error
}

func (e *encoder) u8(v uint8)   { e.buf = append(e.buf, v) }
func (e *encoder) u16(v uint16) { e.buf = binary.LittleEndian.AppendUint16(e.buf, v) }
func (e *encoder) u32(v uint32) { e.buf = binary.LittleEndian.AppendUint32(e.buf, v) }
func (e *encoder) u64(v uint64) { e.buf = binary.LittleEndian.AppendUint64(e.buf, v) }

func (e *encoder) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

func (e *encoder) count(n int) {
	if uint64(n) > math.MaxUint32 {
		if e.err == nil {
			e.err = formatErrorf("a list or string of %d items is too long to encode", n)
		}
		n = 0
	}
	e.u32(uint32(n))
}

func (e *encoder) str(s string) {
	e.count(len(s))
	e.buf = append(e.buf, s...)
}

func (e *encoder) bytes(b []byte) {
	e.count(len(b))
	e.buf = append(e.buf, b...)
}
