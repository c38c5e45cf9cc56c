package unwind

import (
	"encoding/binary"
	"fmt"
)

// buf reads the little-endian fields and LEB128 numbers of call frame
// information from one section. Reads past the end, and numbers that do not
// fit in 64 bits, set a sticky error and return zero, so a parser can read
// a whole record and check err once.
type buf struct {
	sec  *section
	data []byte // the bytes being read: sec.data[start:end] for some range
	base int    // offset of data[0] within the section, for errors and pcrel
	off  int    // offset of the next byte within data
	err  error
}

func newBuf(s *section, start, end int) buf {
	return buf{sec: s, data: s.data[start:end], base: start}
}

// pos is the section offset of the next byte.
func (b *buf) pos() int { return b.base + b.off }

func (b *buf) left() int { return len(b.data) - b.off }

// fail records the first error, at the current position.
func (b *buf) fail(format string, args ...any) {
	if b.err == nil {
		b.err = b.sec.errorf(b.pos(), format, args...)
	}
}

func (b *buf) need(n int) bool {
	if b.err != nil {
		return false
	}
	if n < 0 || b.left() < n {
		b.fail("truncated: need %d bytes, have %d", n, b.left())
		return false
	}
	return true
}

func (b *buf) u8() uint8 {
	if !b.need(1) {
		return 0
	}
	v := b.data[b.off]
	b.off++
	return v
}

func (b *buf) u16() uint16 {
	if !b.need(2) {
		return 0
	}
	v := binary.LittleEndian.Uint16(b.data[b.off:])
	b.off += 2
	return v
}

func (b *buf) u32() uint32 {
	if !b.need(4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(b.data[b.off:])
	b.off += 4
	return v
}

func (b *buf) u64() uint64 {
	if !b.need(8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(b.data[b.off:])
	b.off += 8
	return v
}

// bytes returns the next n bytes (a sub-slice, not a copy).
func (b *buf) bytes(n uint64) []byte {
	if n > uint64(b.left()) {
		b.fail("truncated: block of %d bytes, have %d", n, b.left())
		return nil
	}
	if !b.need(int(n)) {
		return nil
	}
	v := b.data[b.off : b.off+int(n)]
	b.off += int(n)
	return v
}

func (b *buf) uleb() uint64 {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		c := b.u8()
		if b.err != nil {
			return 0
		}
		if shift == 63 && c&0x7e != 0 || shift > 63 && c&0x7f != 0 {
			b.fail("unsigned LEB128 number does not fit in 64 bits")
			return 0
		}
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		}
		if c&0x80 == 0 {
			return v
		}
		if shift >= 70 {
			b.fail("LEB128 number longer than 10 bytes")
			return 0
		}
	}
}

func (b *buf) sleb() int64 {
	var v int64
	var shift uint
	for {
		c := b.u8()
		if b.err != nil {
			return 0
		}
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		}
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
		if shift >= 70 {
			b.fail("LEB128 number longer than 10 bytes")
			return 0
		}
	}
}

// cstring returns the bytes up to a NUL, which it consumes.
func (b *buf) cstring() string {
	for i := b.off; i < len(b.data); i++ {
		if b.data[i] == 0 {
			s := string(b.data[b.off:i])
			b.off = i + 1
			return s
		}
	}
	b.fail("unterminated string")
	return ""
}

// Pointer encodings (DW_EH_PE_*) of .eh_frame and .eh_frame_hdr.
const (
	peAbsptr  = 0x00
	peUleb128 = 0x01
	peUdata2  = 0x02
	peUdata4  = 0x03
	peUdata8  = 0x04
	peSleb128 = 0x09
	peSdata2  = 0x0a
	peSdata4  = 0x0b
	peSdata8  = 0x0c

	pePcrel   = 0x10
	peTextrel = 0x20
	peDatarel = 0x30
	peFuncrel = 0x40
	peAligned = 0x50

	peIndirect = 0x80
	peOmit     = 0xff
)

// checkEncoding reports whether enc is an encoding this package can decode
// in a context where indirect pointers may or may not appear.
func checkEncoding(enc byte, indirectOK bool) error {
	if enc == peOmit {
		return nil
	}
	switch enc & 0x0f {
	case peAbsptr, peUleb128, peUdata2, peUdata4, peUdata8, peSleb128, peSdata2, peSdata4, peSdata8:
	default:
		return fmt.Errorf("unknown pointer format %#x in encoding %#x", enc&0x0f, enc)
	}
	switch enc & 0x70 {
	case 0, pePcrel, peDatarel:
	default:
		return fmt.Errorf("unsupported pointer application %#x in encoding %#x", enc&0x70, enc)
	}
	if enc&peIndirect != 0 && !indirectOK {
		return fmt.Errorf("indirect pointer encoding %#x is not supported here", enc)
	}
	return nil
}

// encodedSize is the size of a fixed-size encoding, or 0 for LEB128.
func encodedSize(enc byte) int {
	switch enc & 0x0f {
	case peUdata2, peSdata2:
		return 2
	case peUdata4, peSdata4:
		return 4
	case peAbsptr, peUdata8, peSdata8:
		return 8
	}
	return 0
}

// value reads a number in the format part of enc (the low four bits),
// sign-extending the signed formats.
func (b *buf) value(enc byte) uint64 {
	switch enc & 0x0f {
	case peAbsptr, peUdata8, peSdata8:
		return b.u64()
	case peUleb128:
		return b.uleb()
	case peUdata2:
		return uint64(b.u16())
	case peUdata4:
		return uint64(b.u32())
	case peSleb128:
		return uint64(b.sleb())
	case peSdata2:
		return uint64(int64(int16(b.u16())))
	case peSdata4:
		return uint64(int64(int32(b.u32())))
	}
	b.fail("unknown pointer format %#x", enc&0x0f)
	return 0
}

// pointer reads a pointer encoded with enc, already checked with
// checkEncoding without indirection. pcrel is relative to the link-time
// address of the field; datarel to dataBase, which only .eh_frame_hdr has.
func (b *buf) pointer(enc byte, dataBase uint64, haveDataBase bool) uint64 {
	at := b.sec.addr + uint64(b.pos())
	v := b.value(enc)
	switch enc & 0x70 {
	case 0:
		return v
	case pePcrel:
		if b.sec.debug {
			b.fail("pc-relative pointer in %s", b.sec.name)
			return 0
		}
		return v + at
	case peDatarel:
		if !haveDataBase {
			b.fail("data-relative pointer encoding %#x outside .eh_frame_hdr is not supported", enc)
			return 0
		}
		return v + dataBase
	}
	b.fail("unsupported pointer encoding %#x", enc)
	return 0
}
