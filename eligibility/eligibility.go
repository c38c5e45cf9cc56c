package eligibility

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/hotpatch/hotpatch/internal/buildid"
)

// Status is how a finding bears on patching.
type Status string

const (
	OK    Status = "ok"    // checked, nothing in the way
	Warn  Status = "warn"  // may work; read the message
	Block Status = "block" // a patch cannot be built or applied as things are
)

// Finding is the result of one check.
type Finding struct {
	Check   string `json:"check"`         // a short stable name: "symtab", "seccomp", "ptrace-scope", …
	Status  Status `json:"status"`        // ok, warn or block
	Message string `json:"message"`       // what was found and why it matters
	Fix     string `json:"fix,omitempty"` // what to do about it
}

// Report is every finding about one target: a file, a process or the
// host.
type Report struct {
	Target   string    `json:"target"`   // the path, "pid N (EXE)" or "host NAME"
	Eligible bool      `json:"eligible"` // no finding blocks
	Findings []Finding `json:"findings"`
}

// Checker checks processes and remembers the findings about each
// executable file (by device, inode, size and modification time), for a
// caller that checks many processes again and again (the agent's
// inventory). Its methods may be called from one goroutine at a time.
type Checker struct {
	bins map[exeKey][]Finding
}

type exeKey struct {
	dev, ino    uint64
	size, mtime int64
}

// ErrNotSupported is returned for process and host checks on systems other
// than Linux.
var ErrNotSupported = errors.New("eligibility: process and host checks need Linux")

func (r *Report) add(check string, st Status, msg, fix string) {
	r.Findings = append(r.Findings, Finding{Check: check, Status: st, Message: msg, Fix: fix})
}

func (r *Report) finish() *Report {
	r.Eligible = true
	for _, f := range r.Findings {
		if f.Status == Block {
			r.Eligible = false
		}
	}
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	return r
}

// Problems returns the findings that are not OK.
func (r *Report) Problems() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Status != OK {
			out = append(out, f)
		}
	}
	return out
}

// stockFix is what to do with a module that was not built for patching.
const stockFix = "rebuild the same source with the same compiler and flags plus -ffunction-sections -fdata-sections -Wl,--emit-relocs and without stripping, " +
	"and deploy that build; for a distribution's package, rebuild the package from its source with its own flags plus -Wl,--emit-relocs and kept symbols, " +
	"check that every loaded segment is byte-identical to the installed file, and use the rebuild as the original (docs/builder.md)"

// Binary checks an ELF file as the original of a patch: what hotpatch
// build needs from it, and what in it would make a running copy hard to
// patch. An error means the file could not be read at all.
func Binary(path string) (*Report, error) {
	r := &Report{Target: path}
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eligibility: %s is not a readable ELF file: %w", path, err)
	}
	defer f.Close()
	binaryFindings(r, f, path)
	return r.finish(), nil
}

func binaryFindings(r *Report, f *elf.File, path string) {
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		r.add("arch", Block, fmt.Sprintf("built for %v; hotpatch patches x86-64 only", f.Machine), "")
	} else {
		r.add("arch", OK, "x86-64", "")
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		r.add("type", Block, fmt.Sprintf("an ELF %v, not an executable or shared library", f.Type), "give the linked program or library")
		return
	}
	if id, err := buildid.Read(path); err != nil || len(id) == 0 {
		r.add("build-id", Block, "no GNU build-id: a patch names its target by build-id", "link with -Wl,--build-id (gcc's default on Linux)")
	} else {
		r.add("build-id", OK, fmt.Sprintf("%x", id), "")
	}
	if s := f.Section(".symtab"); s == nil || s.Type != elf.SHT_SYMTAB {
		r.add("symtab", Block, "no .symtab (stripped): the builder pairs functions and data of the two builds by name", stockFix)
	} else {
		r.add("symtab", OK, "symbol table present", "")
	}
	if keptRelocs(f) {
		r.add("relocations", OK, "relocations kept (-Wl,--emit-relocs)", "")
	} else {
		r.add("relocations", Block, "no kept relocations for its code: the builder cannot tell which bytes of a function refer to other functions and data", stockFix)
	}
	flagsFinding(r, f)
	importsFindings(r, f)
	if shstk(f) {
		r.add("cet", Warn, "built for CET shadow stacks (GNU property SHSTK): where the kernel enables them for the process, patching is untested", "check the running process: hotpatch check --pid PID")
	}
}

// keptRelocs reports whether the file has non-allocated relocation
// sections for executable sections: what --emit-relocs leaves.
func keptRelocs(f *elf.File) bool {
	for _, s := range f.Sections {
		if (s.Type != elf.SHT_RELA && s.Type != elf.SHT_REL) || s.Flags&elf.SHF_ALLOC != 0 {
			continue
		}
		if int(s.Info) < len(f.Sections) && f.Sections[s.Info].Flags&elf.SHF_EXECINSTR != 0 {
			return true
		}
	}
	return false
}

// flagsFinding reads the compiler flags that gcc records in DWARF
// (DW_AT_producer, -grecord-gcc-switches is gcc's default with -g).
// Compilation units of the C runtime (crt*.c, glibc's start files) carry
// the toolchain's own flags and are skipped.
func flagsFinding(r *Report, f *elf.File) {
	d, err := f.DWARF()
	if err != nil {
		r.add("flags", OK, "no DWARF (-g): the compiler flags cannot be read from the file; build both versions with the same flags", "")
		return
	}
	rd := d.Reader()
	units, with := 0, 0
	for n := 0; n < 10000; n++ {
		e, err := rd.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag != dwarf.TagCompileUnit {
			rd.SkipChildren()
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		prod, _ := e.Val(dwarf.AttrProducer).(string)
		rd.SkipChildren()
		if !strings.HasPrefix(prod, "GNU C") || strings.Contains(name, "crt") || strings.HasPrefix(name, "../sysdeps/") {
			continue
		}
		units++
		if strings.Contains(prod, "-ffunction-sections") {
			with++
		}
	}
	switch {
	case units == 0:
		r.add("flags", OK, "no gcc flags recorded in DWARF; build both versions with the same flags", "")
	case with < units:
		r.add("flags", Warn, fmt.Sprintf("%d of %d compilation units built without -ffunction-sections: a fix whose changed function refers to another function of its own file may be refused (the assembler resolved that reference without a relocation)", units-with, units),
			"add -ffunction-sections -fdata-sections to both builds")
	default:
		r.add("flags", OK, "built with -ffunction-sections", "")
	}
}

// contextSwitchers are the functions of user-level context switching:
// threads that run on stacks the kernel does not know of, whose frames
// the engine cannot see when it checks that no thread is inside a
// function it replaces.
var contextSwitchers = []string{"swapcontext", "makecontext", "setcontext", "getcontext"}

func importsFindings(r *Report, f *elf.File) {
	var found []string
	seen := map[string]bool{}
	check := func(name string) {
		name, _, _ = strings.Cut(name, "@")
		for _, c := range contextSwitchers {
			if name == c && !seen[c] {
				seen[c] = true
				found = append(found, c)
			}
		}
	}
	if syms, err := f.ImportedSymbols(); err == nil {
		for _, s := range syms {
			check(s.Name)
		}
	}
	if syms, err := f.Symbols(); err == nil {
		for _, s := range syms {
			if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Section == elf.SHN_UNDEF {
				check(s.Name)
			}
		}
	}
	if len(found) > 0 {
		r.add("context-switching", Warn, fmt.Sprintf("uses %s: coroutines on their own stacks; a replaced function may be suspended on one of them, which the consistency check cannot see", strings.Join(found, ", ")),
			"patch only functions that never run on such a stack, or apply while the program is idle")
	}
	if f.Section(".go.buildinfo") != nil {
		r.add("context-switching", Warn, "a Go program: goroutines run on stacks the consistency check cannot see", "patch Go programs by rebuilding and restarting them")
	}
}

// shstk reports whether the file is marked for CET shadow stacks
// (.note.gnu.property, GNU_PROPERTY_X86_FEATURE_1_AND with SHSTK).
func shstk(f *elf.File) bool {
	s := f.Section(".note.gnu.property")
	if s == nil {
		return false
	}
	b, err := s.Data()
	if err != nil {
		return false
	}
	le := binary.LittleEndian
	for len(b) >= 12 {
		namesz, descsz, typ := le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:])
		off := 12 + int(align(namesz, 4))
		end := off + int(align(descsz, 8))
		if end > len(b) || off > len(b) {
			return false
		}
		if typ == 5 && namesz == 4 && string(b[12:15]) == "GNU" {
			d := b[off : off+int(descsz)]
			for len(d) >= 8 {
				pt, sz := le.Uint32(d), le.Uint32(d[4:])
				if 8+int(sz) > len(d) {
					break
				}
				if pt == 0xc0000002 && sz >= 4 && le.Uint32(d[8:])&2 != 0 {
					return true
				}
				next := 8 + int(align(sz, 8))
				if next > len(d) {
					break
				}
				d = d[next:]
			}
		}
		b = b[end:]
	}
	return false
}

func align(n, a uint32) uint32 { return (n + a - 1) &^ (a - 1) }

// CompilerFlags returns the compiler's command-line options as gcc
// recorded them in the DWARF of an ELF file (DW_AT_producer of the first
// compilation unit that is not C runtime code), e.g. "-O2
// -ffunction-sections". ok is false when the file has no such record
// (built without -g, or not by gcc).
func CompilerFlags(path string) (flags string, ok bool) {
	f, err := elf.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		return "", false
	}
	rd := d.Reader()
	for n := 0; n < 10000; n++ {
		e, err := rd.Next()
		if err != nil || e == nil {
			return "", false
		}
		rd.SkipChildren()
		if e.Tag != dwarf.TagCompileUnit {
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		prod, _ := e.Val(dwarf.AttrProducer).(string)
		if !strings.HasPrefix(prod, "GNU C") || strings.Contains(name, "crt") || strings.HasPrefix(name, "../sysdeps/") {
			continue
		}
		// "GNU C17 12.2.0 -mtune=generic -march=x86-64 -O2 …": the
		// options start at the first word beginning with '-'.
		if i := strings.Index(prod, " -"); i >= 0 {
			return strings.TrimSpace(prod[i:]), true
		}
		return "", true
	}
	return "", false
}
