package unwind

import (
	"encoding/binary"
	"fmt"
)

// Move is code that was copied elsewhere: Size bytes from From, now at To.
type Move struct {
	From, Size, To uint64
}

// Extract returns a self-contained .eh_frame section that describes moved
// code: for every move whose bytes one FDE of t covers from their first,
// a copy of that FDE's rules, with the addresses of the new place. Its
// CIEs have the augmentation "zR" (plus 'S' for signal frames) and encode
// addresses as absolute 8-byte values, so whoever places the code at a
// different address adds the displacement to each FDE's first address
// (see RelocateEhFrame). Personality routines and LSDAs are not carried:
// the result serves unwinding, not exception handling. covered tells which
// moves got an FDE; code without one is simply not described.
func (t *Table) Extract(moves []Move) (data []byte, covered []bool, err error) {
	covered = make([]bool, len(moves))
	cies := map[*cie]int{} // where each CIE's copy starts in data
	for i, m := range moves {
		f, ok, err := t.findEh(m.From)
		if err != nil {
			return nil, nil, err
		}
		if !ok || f.begin != m.From || f.end < m.From+m.Size || f.cie.codeAlign == 0 {
			continue
		}
		// An FDE with DW_CFA_set_loc holds absolute addresses in its
		// instructions; gcc and clang do not emit it in .eh_frame.
		p := program{sec: f.sec, cie: f.cie, initial: &f.cie.initial}
		r := f.cie.initial
		ib := f.instr
		if err := p.run(&ib, &r, f.begin, ^uint64(0), &scratch{}, false); err != nil || p.setLoc {
			continue
		}
		at, ok := cies[f.cie]
		if !ok {
			at = len(data)
			cies[f.cie] = at
			data = appendCIE(data, f.cie)
		}
		data = appendFDE(data, at, m.To, min(m.Size, f.end-f.begin), f.instr.data)
		covered[i] = true
	}
	if len(data) == 0 {
		return nil, covered, nil
	}
	return binary.LittleEndian.AppendUint32(data, 0), covered, nil // the terminator
}

// peUdata8 addresses: 8 bytes, absolute.
const extractEnc = peUdata8

func appendCIE(data []byte, c *cie) []byte {
	body := []byte{0, 0, 0, 0, 1} // CIE id, version 1
	aug := "zR"
	if c.signal {
		aug = "zRS"
	}
	body = append(append(body, aug...), 0)
	body = binary.AppendUvarint(body, c.codeAlign)
	body = appendSleb(body, c.dataAlign)
	body = append(body, byte(c.raReg))
	body = append(body, 1, extractEnc) // augmentation data: the FDE encoding
	body = append(body, c.initInstr...)
	return appendEntry(data, body)
}

func appendFDE(data []byte, cieAt int, begin, size uint64, instr []byte) []byte {
	// The CIE pointer is the distance from its own field back to the CIE.
	ptr := uint32(len(data) + 4 - cieAt)
	body := binary.LittleEndian.AppendUint32(nil, ptr)
	body = binary.LittleEndian.AppendUint64(body, begin)
	body = binary.LittleEndian.AppendUint64(body, size)
	body = append(body, 0) // no augmentation data
	body = append(body, instr...)
	return appendEntry(data, body)
}

// appendEntry appends a length-prefixed entry, padded with DW_CFA_nop to
// a multiple of 8 bytes.
func appendEntry(data, body []byte) []byte {
	for (len(body)+4)%8 != 0 {
		body = append(body, cfaNop)
	}
	data = binary.LittleEndian.AppendUint32(data, uint32(len(body)))
	return append(data, body...)
}

func appendSleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// RelocateEhFrame adds delta to the first address of every FDE of a
// section made by Extract, in place.
func RelocateEhFrame(data []byte, delta uint64) error {
	for off := 0; off+4 <= len(data); {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		if n == 0 {
			return nil
		}
		if off+4+n > len(data) || n < 4 {
			return fmt.Errorf("unwind: entry at %#x overruns the section", off)
		}
		if id := binary.LittleEndian.Uint32(data[off+4:]); id != 0 {
			if n < 20 {
				return fmt.Errorf("unwind: FDE at %#x is too short", off)
			}
			v := binary.LittleEndian.Uint64(data[off+8:])
			binary.LittleEndian.PutUint64(data[off+8:], v+delta)
		}
		off += 4 + n
	}
	return fmt.Errorf("unwind: section has no terminator")
}

// LoadEhFrame reads call frame information from an .eh_frame section
// (without .eh_frame_hdr) at addr, as made by Extract and relocated.
func LoadEhFrame(data []byte, addr uint64) (*Table, error) {
	if len(data) > maxSection {
		return nil, fmt.Errorf("unwind: .eh_frame of %d bytes is too large", len(data))
	}
	return newTable(sections{eh: data, ehAddr: addr, untilZero: true})
}
