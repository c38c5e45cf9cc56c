package engine

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"

	"golang.org/x/arch/x86/x86asm"

	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/unwind"
)

const pageSize = 4096

// headerMagic starts every patch mapping; the state word follows it, then
// the length of the JSON record, the record format word, a reserved word,
// and the record itself (see recordFormat).
const headerMagic = "HOTPATCH"

// recordFormat is the format of the patch record this engine writes. A
// process keeps its patches as long as it runs, across upgrades of
// hotpatch, so every format ever written stays readable:
//
//	1  the JSON record at offset 16 (no format word; byte 16 is '{')
//	2  the format word at offset 16, a reserved word, the JSON record at 24
//
// A reader meeting a format newer than it knows refuses to touch the
// patch and says to upgrade hotpatch.
const recordFormat = 2

// Patch mapping states, written as one 4-byte store so that a crash leaves
// a state that the next run can read.
const (
	statePreparing   uint32 = 1 // mapped and filled; no redirect written
	stateRedirecting uint32 = 2 // redirects being written (Record lists them all)
	stateApplied     uint32 = 3
	stateReverting   uint32 = 4 // redirects being removed
	// stateReverted: redirects removed, the code kept mapped because a
	// stack the engine cannot see may still return into it (see
	// contexts_linux.go). Not a patch the process carries any more.
	stateReverted uint32 = 5
)

const (
	stateOffset  = 8
	lengthOffset = 12
	formatOffset = 16 // format 2 on
	// recordOffsetV1 is where format 1 put the JSON record; recordOffset
	// is where the current format puts it.
	recordOffsetV1 = 16
	recordOffset   = 24
)

// encodeHeader returns the header of a patch mapping in the current
// format, for a JSON record of n bytes.
func encodeHeader(state uint32, n int) []byte {
	hdr := make([]byte, recordOffset)
	copy(hdr, headerMagic)
	binary.LittleEndian.PutUint32(hdr[stateOffset:], state)
	binary.LittleEndian.PutUint32(hdr[lengthOffset:], uint32(n))
	binary.LittleEndian.PutUint32(hdr[formatOffset:], recordFormat)
	return hdr
}

// recordArea returns the room for the JSON record in a mapping whose
// record starts at off: up to the patch's text.
func recordArea(rec *Record, off uint64) uint64 {
	end := rec.Text[0]
	if end == 0 {
		end = pageSize
	}
	if end < off {
		return 0
	}
	return end - off
}

// Record is what a patch mapping says about itself. Any hotpatch instance
// can read it from the process, so the process itself is the state store.
type Record struct {
	ID        string    `json:"id"`
	Version   uint32    `json:"version"`
	Digest    string    `json:"digest,omitempty"` // SHA-256 of the patch file, if known
	AppliedAt int64     `json:"applied_at"`       // Unix nanoseconds
	BuildID   string    `json:"build_id"`
	Module    string    `json:"module"`
	Bias      uint64    `json:"bias"`
	Base      uint64    `json:"base"`
	Size      uint64    `json:"size"`
	Text      [2]uint64 `json:"text"` // offset, size within the mapping
	// Unwind locates the patch code's call frame information (.eh_frame
	// format, run-time addresses) within the mapping: offset, size.
	Unwind    [2]uint64  `json:"unwind,omitzero"`
	Redirects []Redirect `json:"redirects"`
	Functions []FuncInfo `json:"functions"`
	// Hijack is set while an apply waits for a thread to leave a
	// function (see catchReturn).
	Hijack *Hijack `json:"hijack,omitempty"`
	// StartupOnly copies the patch's flag (patch.FlagStartupOnly): the
	// patch changes only code that runs at start-up, so the process it
	// was applied to does not run the fix until it restarts.
	StartupOnly bool `json:"startup_only,omitempty"`
}

// Redirect is one jump written at an original function's entry, with the
// bytes it replaced.
type Redirect struct {
	Function string `json:"function"`
	Site     uint64 `json:"site"`
	Old      []byte `json:"old"`
	New      []byte `json:"new"`
}

// FuncInfo locates one function of an applied patch in the process.
type FuncInfo struct {
	Name    string `json:"name"`
	OldAddr uint64 `json:"old_addr,omitempty"` // run-time address
	OldSize uint64 `json:"old_size,omitempty"`
	NewAddr uint64 `json:"new_addr,omitempty"`
	NewSize uint64 `json:"new_size,omitempty"`
}

// image is a patch laid out for one process at one base address.
type image struct {
	base uint64
	data []byte // the whole mapping's contents
	// region boundaries (offsets in data), page aligned: header | text+stubs (rx) | rodata+slots (r) | data+bss (rw)
	textOff, roOff, dataOff, end uint64
	record                       Record
	unwind                       [2]uint64 // offset and size of the call frame information
}

// layoutSizes computes the size of each region for a patch.
func layoutSizes(p *patch.Patch) (header, text, ro, data uint64) {
	// The record names every function and redirect; leave it room.
	header = pageSize + uint64(len(p.Functions))*512
	nstub := uint64(0)
	nslot := uint64(0)
	for _, r := range p.Relocs {
		if r.Target.Kind == patch.External {
			nstub++ // a stub or a load thunk if it is out of reach
		}
		if r.Target.Indirect || r.Target.Kind == patch.External {
			nslot++ // a slot if indirect, or if a far object must be read through one
		}
	}
	// A stub or a load thunk each, and the return stub at the end.
	text = alignUp(uint64(len(p.Text)), 16) + nstub*32 + returnStubSize
	ro = alignUp(uint64(len(p.ROData)), 16) + alignUp(uint64(len(p.Unwind)), 16) + nslot*8
	data = alignUp(uint64(len(p.Data)), 16) + p.BSSSize
	return alignUp(header, pageSize), alignUp(max(text, 1), pageSize), alignUp(max(ro, 1), pageSize), alignUp(max(data, 1), pageSize)
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// resolveFunc resolves an external symbol to a run-time address.
type resolveFunc func(symbol, version string) (uint64, error)

// buildImage lays the patch out at base and applies every relocation.
func buildImage(p *patch.Patch, base, bias uint64, resolve resolveFunc) (*image, error) {
	l := newLinker(p, base, bias)
	for _, r := range p.Relocs {
		if err := l.relocate(r, resolve); err != nil {
			return nil, err
		}
	}
	return l.im, nil
}

// linker fills an image: the patch's sections copied in, then each
// relocation resolved, with the stubs, thunks and address slots that far
// targets need made on the way.
type linker struct {
	p          *patch.Patch
	im         *image
	base, bias uint64
	stubNext   uint64            // next free offset for a stub or thunk (text)
	slotNext   uint64            // next free offset for an address slot (rodata)
	bssOff     uint64            // where the bss starts
	stubs      map[string]uint64 // symbol@version -> stub address
	slots      map[uint64]uint64 // target address -> slot address
}

// newLinker lays the patch out at base: header | text, stubs and the
// return stub | rodata, call frame information and slots | data and bss.
func newLinker(p *patch.Patch, base, bias uint64) *linker {
	hdr, text, ro, data := layoutSizes(p)
	im := &image{base: base, textOff: hdr, roOff: hdr + text, dataOff: hdr + text + ro}
	im.end = im.dataOff + data
	im.data = make([]byte, im.end)
	copy(im.data[im.textOff:], p.Text)
	copy(im.data[im.roOff:], p.ROData)
	copy(im.data[im.dataOff:], p.Data)
	// The call frame information of the patch code, its addresses moved
	// to where the text lands, between the rodata and the slots.
	unwindOff := im.roOff + alignUp(uint64(len(p.ROData)), 16)
	if len(p.Unwind) > 0 {
		cfi := im.data[unwindOff : unwindOff+uint64(len(p.Unwind))]
		copy(cfi, p.Unwind)
		if unwind.RelocateEhFrame(cfi, base+im.textOff) == nil {
			im.unwind = [2]uint64{unwindOff, uint64(len(p.Unwind))}
		}
	}
	return &linker{
		p: p, im: im, base: base, bias: bias,
		stubNext: im.textOff + alignUp(uint64(len(p.Text)), 16),
		slotNext: unwindOff + alignUp(uint64(len(p.Unwind)), 16),
		bssOff:   im.dataOff + alignUp(uint64(len(p.Data)), 16),
		stubs:    map[string]uint64{},
		slots:    map[uint64]uint64{},
	}
}

// secAddr is the run-time address of an offset in a section of the patch.
func (l *linker) secAddr(s patch.Section, off uint64) uint64 {
	switch s {
	case patch.Text:
		return l.base + l.im.textOff + off
	case patch.ROData:
		return l.base + l.im.roOff + off
	case patch.Data:
		return l.base + l.im.dataOff + off
	case patch.BSS:
		return l.base + l.bssOff + off
	}
	return 0
}

// slotFor returns the address of an 8-byte slot holding T (a GOT entry of
// the patch's own), making it on first use.
func (l *linker) slotFor(T uint64) (uint64, error) {
	if slot, ok := l.slots[T]; ok {
		return slot, nil
	}
	if l.slotNext+8 > l.im.dataOff {
		return 0, fmt.Errorf("patch needs more address slots than were laid out")
	}
	slot := l.base + l.slotNext
	binary.LittleEndian.PutUint64(l.im.data[l.slotNext:], T)
	l.slotNext += 8
	l.slots[T] = slot
	return slot, nil
}

// target resolves where relocation r points (through a slot of its own
// when the reference is indirect).
func (l *linker) target(r patch.Reloc, resolve resolveFunc) (uint64, error) {
	var T uint64
	switch r.Target.Kind {
	case patch.InPatch:
		T = l.secAddr(r.Target.Section, r.Target.Offset)
	case patch.InModule:
		T = l.bias + r.Target.Addr
	case patch.External:
		a, err := resolve(r.Target.Symbol, r.Target.Version)
		if err != nil {
			return 0, err
		}
		T = a
	}
	if r.Target.Indirect {
		return l.slotFor(T)
	}
	return T, nil
}

// relocate resolves one relocation and writes its field.
func (l *linker) relocate(r patch.Reloc, resolve resolveFunc) error {
	T, err := l.target(r, resolve)
	if err != nil {
		return err
	}
	P := l.secAddr(r.Section, r.Offset)
	field := l.im.data[P-l.base:]
	v := int64(T) + r.Addend
	switch r.Type {
	case patch.PC32:
		d := v - int64(P)
		if d < math.MinInt32 || d > math.MaxInt32 {
			var done bool
			if d, done, err = l.farPC32(r, T, P); err != nil || done {
				return err
			}
		}
		binary.LittleEndian.PutUint32(field, uint32(int32(d)))
	case patch.Abs64:
		binary.LittleEndian.PutUint64(field, uint64(v))
	case patch.Abs32:
		if v < 0 || v > math.MaxUint32 {
			return fmt.Errorf("absolute 32-bit field at %v+%#x cannot hold %#x; the target module must be mapped low", r.Section, r.Offset, v)
		}
		binary.LittleEndian.PutUint32(field, uint32(v))
	case patch.Abs32S:
		if v < math.MinInt32 || v > math.MaxInt32 {
			return fmt.Errorf("absolute 32-bit field at %v+%#x cannot hold %#x; the target module must be mapped low", r.Section, r.Offset, v)
		}
		binary.LittleEndian.PutUint32(field, uint32(int32(v)))
	}
	return nil
}

// farPC32 handles a PC-relative reference from patch code to a library
// symbol T more than 2 GiB away from the field at P: a call or jump goes
// through a stub, a lea of the symbol's address becomes a load from a
// slot, a mov of its value jumps to a thunk that loads through a slot.
// It returns the displacement to write, or done when it rewrote the
// instruction itself.
func (l *linker) farPC32(r patch.Reloc, T, P uint64) (d int64, done bool, err error) {
	if r.Target.Kind != patch.External || r.Section != patch.Text {
		return 0, false, fmt.Errorf("patch code at text+%#x cannot reach %s at %#x (more than 2 GiB away)", r.Offset, describeTarget(r.Target), T)
	}
	im := l.im
	in, start, ok := fieldInsn(l.p, r.Offset)
	switch {
	case ok && isBranch(in):
		// A call or jump to a far library function: go through a stub.
		key := r.Target.Symbol + "@" + r.Target.Version
		stub, ok := l.stubs[key]
		if !ok {
			stub = l.base + l.stubNext
			s := im.data[l.stubNext:]
			copy(s, []byte{0xff, 0x25, 0, 0, 0, 0}) // jmp *0(%rip)
			binary.LittleEndian.PutUint64(s[6:], T)
			l.stubNext += 16
			l.stubs[key] = stub
		}
		return int64(stub) + r.Addend - int64(P), false, nil
	case ok && r.Addend == -4 && (in.Op == x86asm.LEA || in.Op == x86asm.MOV):
		// A far library object (stderr, environ): read its address from a
		// slot next to the patch, like a GOT entry.
		slot, err := l.slotFor(T)
		if err != nil {
			return 0, false, err
		}
		insnAddr := l.base + im.textOff + start
		if in.Op == x86asm.LEA {
			// lea sym(%rip), %r -> mov slot(%rip), %r: same length.
			if err := rewriteLEA(im.data[im.textOff+start:], in, r.Offset-start); err != nil {
				return 0, false, fmt.Errorf("patch code at text+%#x: %v", r.Offset, err)
			}
			return int64(slot) - int64(P+4), false, nil
		}
		// mov sym(%rip), %r -> jmp to a thunk that loads the address from
		// the slot, then the value, and jumps back.
		thunk := l.base + l.stubNext
		code, err := loadThunk(in, slot, thunk, insnAddr+uint64(in.Len))
		if err != nil {
			return 0, false, fmt.Errorf("patch code at text+%#x: %v", r.Offset, err)
		}
		if l.stubNext+uint64(len(code)) > im.roOff {
			return 0, false, fmt.Errorf("patch code at text+%#x: no room for a thunk", r.Offset)
		}
		copy(im.data[l.stubNext:], code)
		l.stubNext += alignUp(uint64(len(code)), 16)
		insn := im.data[im.textOff+start : im.textOff+start+uint64(in.Len)]
		insn[0] = 0xe9
		binary.LittleEndian.PutUint32(insn[1:], uint32(int32(int64(thunk)-int64(insnAddr+5))))
		for i := 5; i < len(insn); i++ {
			insn[i] = 0x90
		}
		return 0, true, nil
	}
	return 0, false, fmt.Errorf("patch code at text+%#x cannot reach %s at %#x (more than 2 GiB away)", r.Offset, describeTarget(r.Target), T)
}

func describeTarget(t patch.RelocTarget) string {
	switch t.Kind {
	case patch.External:
		return "symbol " + t.Symbol
	case patch.InModule:
		return fmt.Sprintf("module address %#x", t.Addr)
	}
	return fmt.Sprintf("%v+%#x", t.Section, t.Offset)
}

// fieldInsn decodes the instruction of the patch's text that holds the
// relocated field at text offset off, and returns it with its offset.
func fieldInsn(p *patch.Patch, off uint64) (x86asm.Inst, uint64, bool) {
	for _, f := range p.Functions {
		if f.NewSize == 0 || off < f.NewOffset || off >= f.NewOffset+f.NewSize {
			continue
		}
		code := p.Text[f.NewOffset : f.NewOffset+f.NewSize]
		for i := 0; i < len(code); {
			if len(code)-i >= 4 && code[i] == 0xf3 && code[i+1] == 0x0f && code[i+2] == 0x1e && code[i+3] == 0xfa {
				i += 4
				continue
			}
			in, err := x86asm.Decode(code[i:], 64)
			if err != nil {
				return x86asm.Inst{}, 0, false
			}
			if uint64(i) <= off-f.NewOffset && off-f.NewOffset < uint64(i+in.Len) {
				return in, f.NewOffset + uint64(i), true
			}
			i += in.Len
		}
	}
	return x86asm.Inst{}, 0, false
}

// isBranch reports whether an instruction is a call, jump or conditional
// jump with a PC-relative target.
func isBranch(in x86asm.Inst) bool {
	_, ok := in.Args[0].(x86asm.Rel)
	return ok
}

// writeHeader writes the magic, state and record into the image.
func (im *image) writeHeader(state uint32) error {
	rec, err := json.Marshal(im.record)
	if err != nil {
		return err
	}
	if uint64(recordOffset+len(rec)) > im.textOff {
		return fmt.Errorf("patch record of %d bytes does not fit in the header", len(rec))
	}
	copy(im.data, encodeHeader(state, len(rec)))
	copy(im.data[recordOffset:], rec)
	return nil
}
