package builder

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hotpatch/hotpatch/internal/buildid"
	"github.com/hotpatch/hotpatch/patch"
)

// secKind classifies an allocated section by what a reference into it means.
type secKind uint8

const (
	secOther  secKind = iota
	secCode           // functions
	secPLT            // .plt, .plt.got, .plt.sec
	secGOT            // .got, .got.plt
	secROData         // read-only data, including .data.rel.ro (read-only after relocation)
	secData           // writable data with initial values
	secBSS            // writable zero-initialised data
	secTLS            // .tdata, .tbss
)

type section struct {
	name       string
	addr, size uint64
	kind       secKind
	data       []byte // nil for NOBITS
	align      uint64
}

// symbol is a symbol of .symtab with its identity.
type symbol struct {
	index   int    // index in .symtab
	name    string // as written, e.g. "stderr@GLIBC_2.2.5"
	base    string // without version
	version string
	file    string // source file for local symbols
	key     string // identity: name for globals, file+":"+name for locals
	addr    uint64
	size    uint64
	typ     elf.SymType
	bind    elf.SymBind
	shndx   elf.SectionIndex
	sec     *section
}

func (s *symbol) defined() bool {
	return s.shndx != elf.SHN_UNDEF && s.shndx != elf.SHN_ABS && s.shndx != elf.SHN_COMMON
}

// display is the name used in messages: "file.c:name" for statics.
func (s *symbol) display() string {
	if s.file != "" {
		return s.file + ":" + s.name
	}
	return s.name
}

// reloc is one relocation kept by --emit-relocs (at a link-time address).
type reloc struct {
	off    uint64 // P: link-time address of the field
	typ    elf.R_X86_64
	sym    *symbol // nil for symbol 0
	addend int64
}

// dynReloc is one dynamic relocation (.rela.dyn, .rela.plt).
type dynReloc struct {
	off    uint64
	typ    elf.R_X86_64
	sym    string // dynamic symbol name without version, "" for none
	addend int64
}

// module is one input build, read and indexed.
type module struct {
	path    string
	typ     patch.ModuleType
	buildID []byte

	sections []*section // allocated sections, sorted by address
	syms     []*symbol  // .symtab, index i at syms[i] (syms[0] is nil)

	funcs   []*symbol          // functions with a size, sorted by address
	objects []*symbol          // data objects with a size, sorted by address
	labels  []uint64           // chunk boundaries in data sections, sorted: every symbol's start and end, every section's bounds and every address a relocation refers to
	hard    []uint64           // the subset of labels that symbols and sections make (a chunk never crosses one)
	byKey   map[string]*symbol // functions and objects by identity

	relocs []reloc              // emitted relocations in allocated sections, sorted by off
	dyn    map[uint64]*dynReloc // dynamic relocations by field address

	emptySecs map[string]bool // sections of size zero (.tm_clone_table)
	tls       *elf.Prog       // PT_TLS, if any
}

func openModule(path string) (*module, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, &InputError{Path: path, Reason: "not an ELF file: " + err.Error()}
	}
	defer f.Close()
	m, err := openImage(path, f)
	if err != nil {
		return nil, err
	}
	if err := m.readSymbols(f); err != nil {
		return nil, err
	}
	if err := m.readRelocs(f); err != nil {
		return nil, err
	}
	return m, nil
}

// openImage reads what a module's loaded image needs: its type, build-id
// and allocated sections.
func openImage(path string, f *elf.File) (*module, error) {
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, &InputError{Path: path, Reason: fmt.Sprintf("unsupported architecture %v %v; only x86-64 is supported", f.Class, f.Machine)}
	}
	m := &module{path: path, byKey: map[string]*symbol{}, dyn: map[uint64]*dynReloc{}}
	switch f.Type {
	case elf.ET_EXEC:
		m.typ = patch.Executable
	case elf.ET_DYN:
		m.typ = patch.SharedObject
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				m.typ = patch.PIE
			}
		}
	default:
		return nil, &InputError{Path: path, Reason: fmt.Sprintf("ELF type %v is not an executable or shared library (link it first)", f.Type)}
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_TLS {
			m.tls = p
		}
	}
	var err error
	if m.buildID, err = buildid.FromFile(f); err != nil {
		return nil, &InputError{Path: path, Reason: err.Error()}
	}
	if err := m.readSections(f); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *module) readSections(f *elf.File) error {
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Size == 0 {
			continue
		}
		sec := &section{name: s.Name, addr: s.Addr, size: s.Size, align: s.Addralign}
		switch {
		case s.Name == ".plt" || s.Name == ".plt.got" || s.Name == ".plt.sec":
			sec.kind = secPLT
		case s.Flags&elf.SHF_EXECINSTR != 0:
			sec.kind = secCode
		case s.Flags&elf.SHF_TLS != 0:
			sec.kind = secTLS
		case s.Name == ".got" || s.Name == ".got.plt":
			sec.kind = secGOT
		case s.Flags&elf.SHF_WRITE == 0 || strings.HasPrefix(s.Name, ".data.rel.ro"):
			sec.kind = secROData
		case s.Name == ".dynamic" || s.Name == ".init_array" || s.Name == ".fini_array" ||
			s.Name == ".preinit_array" || s.Name == ".tm_clone_table":
			sec.kind = secOther
		case s.Type == elf.SHT_NOBITS:
			sec.kind = secBSS
		default:
			sec.kind = secData
		}
		if s.Type != elf.SHT_NOBITS {
			data, err := s.Data()
			if err != nil {
				return &InputError{Path: m.path, Reason: fmt.Sprintf("reading section %s: %v", s.Name, err)}
			}
			sec.data = data
		}
		m.sections = append(m.sections, sec)
	}
	sort.Slice(m.sections, func(i, j int) bool { return m.sections[i].addr < m.sections[j].addr })
	return nil
}

// sectionAt returns the allocated section that holds addr, or nil.
func (m *module) sectionAt(addr uint64) *section {
	i := sort.Search(len(m.sections), func(i int) bool { return m.sections[i].addr+m.sections[i].size > addr })
	if i < len(m.sections) && m.sections[i].addr <= addr {
		// .tbss overlaps the sections after it in the address space; prefer
		// any other section that also holds the address.
		if m.sections[i].kind == secTLS && m.sections[i].data == nil && i+1 < len(m.sections) {
			if n := m.sections[i+1]; n.addr <= addr && addr < n.addr+n.size {
				return n
			}
		}
		return m.sections[i]
	}
	return nil
}

// bytesAt returns n bytes of file contents at a link-time address.
func (m *module) bytesAt(addr, n uint64) ([]byte, bool) {
	s := m.sectionAt(addr)
	if s == nil || s.data == nil || addr+n > s.addr+s.size || addr+n < addr {
		return nil, false
	}
	return s.data[addr-s.addr : addr-s.addr+n], true
}

func (m *module) readSymbols(f *elf.File) error {
	syms, err := f.Symbols()
	if err != nil || len(syms) == 0 {
		return &InputError{Path: m.path, Reason: "no symbol table (.symtab); build without -s and do not strip the input builds"}
	}
	m.syms = make([]*symbol, len(syms)+1)
	file := ""
	var sawGlobal bool
	for i, es := range syms {
		typ, bind := elf.ST_TYPE(es.Info), elf.ST_BIND(es.Info)
		if typ == elf.STT_FILE {
			file = filepath.Base(es.Name)
			continue
		}
		s := &symbol{index: i + 1, name: es.Name, addr: es.Value, size: es.Size, typ: typ, bind: bind, shndx: es.Section}
		s.base, s.version = splitVersion(es.Name)
		if typ == elf.STT_SECTION && int(es.Section) < len(f.Sections) {
			s.name = f.Sections[es.Section].Name
			s.base = s.name
			s.key = "section:" + s.name
			if f.Sections[es.Section].Size == 0 {
				if m.emptySecs == nil {
					m.emptySecs = map[string]bool{}
				}
				m.emptySecs[s.name] = true
			}
		} else if bind == elf.STB_LOCAL && !sawGlobal {
			s.file = file
			s.key = file + ":" + es.Name
		} else {
			sawGlobal = true
			s.key = es.Name
		}
		if s.defined() {
			s.sec = m.sectionAt(s.addr)
		}
		m.syms[i+1] = s
	}

	// Functions: deduplicate aliases (keep the first global, else the first).
	byAddr := map[uint64]*symbol{}
	var funcs []*symbol
	for _, s := range m.syms[1:] {
		if s == nil || s.typ != elf.STT_FUNC || !s.defined() || s.sec == nil || s.sec.kind != secCode {
			continue
		}
		if prev, ok := byAddr[s.addr]; ok {
			if prev.bind == elf.STB_LOCAL && s.bind != elf.STB_LOCAL {
				*prev = *s
			}
			continue
		}
		byAddr[s.addr] = s
		funcs = append(funcs, s)
	}
	sort.Slice(funcs, func(i, j int) bool { return funcs[i].addr < funcs[j].addr })
	// Zero-size functions (crt helpers written in assembly) reach the next one.
	for i, s := range funcs {
		if s.size != 0 {
			continue
		}
		end := s.sec.addr + s.sec.size
		if i+1 < len(funcs) && funcs[i+1].addr < end {
			end = funcs[i+1].addr
		}
		s.size = end - s.addr
	}
	m.funcs = funcs

	for _, s := range m.syms[1:] {
		if s == nil || !s.defined() || s.sec == nil {
			continue
		}
		switch s.sec.kind {
		case secROData, secData, secBSS, secTLS, secGOT, secOther:
			m.labels = append(m.labels, s.addr)
			if s.size > 0 {
				m.labels = append(m.labels, s.addr+s.size)
			}
			if (s.typ == elf.STT_OBJECT || s.typ == elf.STT_TLS) && s.size > 0 {
				m.objects = append(m.objects, s)
			}
		}
	}
	sort.Slice(m.objects, func(i, j int) bool { return m.objects[i].addr < m.objects[j].addr })
	for _, s := range m.funcs {
		m.addKey(s)
	}
	for _, s := range m.objects {
		m.addKey(s)
	}
	for _, s := range m.sections {
		m.labels = append(m.labels, s.addr, s.addr+s.size)
	}
	slices.Sort(m.labels)
	m.hard = slices.Compact(slices.Clone(m.labels))
	return nil
}

func (m *module) addKey(s *symbol) {
	if _, dup := m.byKey[s.key]; dup {
		// Two locals of the same name in one file (rare: nested statics);
		// make both unmatchable by name rather than guess.
		m.byKey[s.key] = nil
		return
	}
	m.byKey[s.key] = s
}

func splitVersion(name string) (base, version string) {
	if i := strings.IndexByte(name, '@'); i > 0 {
		return name[:i], strings.TrimLeft(name[i:], "@")
	}
	return name, ""
}

func (m *module) readRelocs(f *elf.File) error {
	emitted, err := m.scanRelocs(f, true)
	if err != nil {
		return err
	}
	if emitted == 0 {
		return &InputError{Path: m.path, Reason: "no emitted relocations; link both builds with -Wl,--emit-relocs (and compile with -ffunction-sections -fdata-sections)"}
	}
	m.labelReferences()
	return nil
}

// scanRelocs reads the dynamic relocations and, when emitted is set, the
// relocations --emit-relocs kept; it returns how many of those it read.
func (m *module) scanRelocs(f *elf.File, emitted bool) (int, error) {
	symtab := -1
	dynsym := -1
	for i, s := range f.Sections {
		switch s.Type {
		case elf.SHT_SYMTAB:
			symtab = i
		case elf.SHT_DYNSYM:
			dynsym = i
		}
	}
	var dynSyms []elf.Symbol
	if dynsym >= 0 {
		dynSyms, _ = f.DynamicSymbols()
	}
	n := 0
	for _, s := range f.Sections {
		if s.Type == elf.SHT_REL {
			return 0, &InputError{Path: m.path, Reason: "REL relocations are not supported on x86-64"}
		}
		if s.Type != elf.SHT_RELA {
			continue
		}
		isDyn := int(s.Link) == dynsym || s.Flags&elf.SHF_ALLOC != 0
		if !isDyn && (!emitted || int(s.Link) != symtab) {
			continue
		}
		data, err := s.Data()
		if err != nil {
			return 0, &InputError{Path: m.path, Reason: fmt.Sprintf("reading %s: %v", s.Name, err)}
		}
		if len(data)%24 != 0 {
			return 0, &InputError{Path: m.path, Reason: fmt.Sprintf("%s has a size that is not a multiple of 24", s.Name)}
		}
		if !isDyn {
			if int(s.Info) >= len(f.Sections) || f.Sections[s.Info].Flags&elf.SHF_ALLOC == 0 {
				continue // relocations of debug sections
			}
		}
		for off := 0; off < len(data); off += 24 {
			rOff := binary.LittleEndian.Uint64(data[off:])
			info := binary.LittleEndian.Uint64(data[off+8:])
			add := int64(binary.LittleEndian.Uint64(data[off+16:]))
			typ := elf.R_X86_64(info & 0xffffffff)
			si := int(info >> 32)
			if isDyn {
				d := &dynReloc{off: rOff, typ: typ, addend: add}
				if si > 0 && si <= len(dynSyms) {
					d.sym, _ = splitVersion(dynSyms[si-1].Name)
				}
				m.dyn[rOff] = d
				continue
			}
			if typ == elf.R_X86_64_NONE {
				continue
			}
			if si >= len(m.syms) {
				return 0, &InputError{Path: m.path, Reason: fmt.Sprintf("%s: symbol index %d out of range", s.Name, si)}
			}
			m.relocs = append(m.relocs, reloc{off: rOff, typ: typ, sym: m.syms[si], addend: add})
			n++
		}
	}
	sort.Slice(m.relocs, func(i, j int) bool { return m.relocs[i].off < m.relocs[j].off })
	return n, nil
}

// labelReferences adds a label at every place that code or data refers to
// through a section symbol.
func (m *module) labelReferences() {
	// Places that code or data refer to through a section symbol start a
	// chunk of their own, like a jump table or a string literal without a
	// label: PC-relative references from code (S+A+4 is exact for the
	// instructions that take such addresses: lea, mov without immediate)
	// and absolute ones from anywhere (S+A; non-PIE code and pointers in
	// data). So unrelated literals never glue into one chunk.
	for _, r := range m.relocs {
		if r.sym == nil || r.sym.typ != elf.STT_SECTION || !r.sym.defined() {
			continue
		}
		var t uint64
		switch r.typ {
		case elf.R_X86_64_PC32:
			if s := m.sectionAt(r.off); s == nil || s.kind != secCode {
				continue
			}
			t = r.sym.addr + uint64(r.addend) + 4
		case elf.R_X86_64_32, elf.R_X86_64_32S, elf.R_X86_64_64:
			t = r.sym.addr + uint64(r.addend)
		default:
			continue
		}
		if s := m.sectionAt(t); s != nil && (s.kind == secROData || s.kind == secData || s.kind == secBSS) && m.objectIn(t) == nil {
			m.labels = append(m.labels, t)
		}
	}
	slices.Sort(m.labels)
	m.labels = slices.Compact(m.labels)
}

// relocsIn returns the emitted relocations with fields in [addr, addr+size).
func (m *module) relocsIn(addr, size uint64) []reloc {
	i := sort.Search(len(m.relocs), func(i int) bool { return m.relocs[i].off >= addr })
	j := sort.Search(len(m.relocs), func(i int) bool { return m.relocs[i].off >= addr+size })
	return m.relocs[i:j]
}

// funcAt returns the function that holds addr, or nil.
func (m *module) funcAt(addr uint64) *symbol {
	i := sort.Search(len(m.funcs), func(i int) bool { return m.funcs[i].addr+m.funcs[i].size > addr })
	if i < len(m.funcs) && m.funcs[i].addr <= addr {
		return m.funcs[i]
	}
	return nil
}

// objectAt returns the data object that holds addr, or, failing that, the
// one that ends exactly at addr (a pointer one past the end of an array).
func (m *module) objectAt(addr uint64) *symbol {
	if o := m.objectIn(addr); o != nil {
		return o
	}
	i := sort.Search(len(m.objects), func(i int) bool { return m.objects[i].addr+m.objects[i].size > addr })
	for k := i - 1; k >= 0 && k >= i-2; k-- {
		if o := m.objects[k]; o.addr+o.size == addr {
			return o
		}
	}
	return nil
}

// objectIn returns the data object that holds addr, or nil.
func (m *module) objectIn(addr uint64) *symbol {
	i := sort.Search(len(m.objects), func(i int) bool { return m.objects[i].addr+m.objects[i].size > addr })
	if i < len(m.objects) && m.objects[i].addr <= addr {
		return m.objects[i]
	}
	return nil
}

// extent returns the anonymous read-only chunk that starts at addr (where
// code refers to it) and ends at the next label or referenced address,
// extended to the end of a C string that runs past it (the linker merges
// string tails, so "world" may sit inside "hello world"). The extension
// never crosses a symbol or a relocated field, and a chunk never ends
// inside a relocated field.
func (m *module) extent(addr uint64) (start, end uint64) {
	start, end = m.plainExtent(addr)
	sec := m.sectionAt(addr)
	if sec.data == nil || end <= start {
		return start, end
	}
	b := sec.data[start-sec.addr : end-sec.addr]
	if !looksLikeString(b) || b[len(b)-1] == 0 || len(m.relocsIn(start, end-start)) > 0 {
		return start, end
	}
	limit := sec.addr + sec.size
	if i := sort.Search(len(m.hard), func(i int) bool { return m.hard[i] > end }); i < len(m.hard) {
		limit = min(limit, m.hard[i])
	}
	if rs := m.relocsIn(end, limit-end); len(rs) > 0 {
		limit = rs[0].off
	}
	rest := sec.data[end-sec.addr : limit-sec.addr]
	if n := bytes.IndexByte(rest, 0); n >= 0 && looksLikeString(rest[:n]) {
		end += uint64(n) + 1
	}
	return start, end
}

// plainExtent returns the chunk from addr to the next label, the end of
// its section, or the end of a relocated field that straddles that point.
func (m *module) plainExtent(addr uint64) (start, end uint64) {
	i := sort.Search(len(m.labels), func(i int) bool { return m.labels[i] > addr })
	start = addr
	sec := m.sectionAt(addr)
	end = sec.addr + sec.size
	if i < len(m.labels) && m.labels[i] < end {
		end = m.labels[i]
	}
	if start >= 8 {
		for _, r := range m.relocsIn(start-7, end-start+7) {
			if fe := r.off + relocSize(r.typ); r.off < end && fe > end {
				end = min(fe, sec.addr+sec.size)
			}
		}
	}
	return start, end
}

func relocSize(t elf.R_X86_64) uint64 {
	switch t {
	case elf.R_X86_64_64, elf.R_X86_64_DTPOFF64, elf.R_X86_64_TPOFF64, elf.R_X86_64_PC64:
		return 8
	}
	return 4
}

func looksLikeString(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c == 0 {
			continue
		}
		if c < 0x20 && c != '\n' && c != '\t' && c != '\r' || c >= 0x7f {
			return false
		}
	}
	return true
}

// dynSorted returns the dynamic relocations sorted by address.
func (m *module) dynSorted() []*dynReloc {
	out := make([]*dynReloc, 0, len(m.dyn))
	for _, d := range m.dyn {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].off < out[j].off })
	return out
}

// copyOf returns the module's copy of a library object (made by a COPY
// relocation), or nil.
func (m *module) copyOf(name, version string) *symbol {
	for _, o := range m.objects {
		if o.base == name && o.version == version {
			if d := m.dyn[o.addr]; d != nil && d.typ == elf.R_X86_64_COPY {
				return o
			}
		}
	}
	return nil
}
