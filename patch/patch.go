package patch

import "fmt"

// Arch names the machine architecture of a target module.
type Arch string

// Architectures the format knows. Only x86-64 is built and applied today.
const (
	ArchX86_64 Arch = "x86_64"
	ArchARM64  Arch = "aarch64"
)

// ModuleType tells how a target module is loaded, which decides whether
// link-time addresses need the load bias added at apply time.
type ModuleType uint8

const (
	// Executable is a fixed-address executable (ET_EXEC): addresses are absolute.
	Executable ModuleType = 1
	// PIE is a position-independent executable (ET_DYN with an interpreter).
	PIE ModuleType = 2
	// SharedObject is a shared library (ET_DYN without an interpreter).
	SharedObject ModuleType = 3
)

func (t ModuleType) String() string {
	switch t {
	case Executable:
		return "executable"
	case PIE:
		return "pie"
	case SharedObject:
		return "shared-object"
	}
	return fmt.Sprintf("module-type(%d)", uint8(t))
}

// Target identifies the module (ELF file) a patch fixes.
type Target struct {
	// Name is the base name of the file the patch was built from, e.g. "libssl.so.3".
	// It is informative: matching is by BuildID.
	Name string
	// BuildID is the content of the NT_GNU_BUILD_ID note of the original module.
	BuildID []byte
	Arch    Arch
	Type    ModuleType
}

// FuncFlags describe how a function of the patch is used.
type FuncFlags uint8

const (
	// FuncNew marks a function that does not exist in the original module
	// (for example a helper the fix added). It has no Old* fields.
	FuncNew FuncFlags = 1 << iota
	// FuncNoRedirect marks a replaced function whose old entry must not get a
	// redirect, because it is only ever entered from its parent (a ".cold" part).
	// Its old range still takes part in the consistency check.
	FuncNoRedirect
	// FuncExported marks a new function that the fixed build exports (it is
	// in its .dynsym) but that the patch carries hidden: no other module can
	// link to it until the process loads the fixed build. Set only when the
	// patch author allowed new exported symbols (format version 3).
	FuncExported
)

// Flags say what the builder found about the patch as a whole (format
// version 3; a patch without flags is written as version 2).
type Flags uint32

const (
	// FlagLayoutChecked says that the builder compared, with the DWARF of
	// both builds, the layout of every type the changed code uses and found
	// none changed. Without it (no -g, or a patch of an older builder) type
	// layouts were not checked.
	FlagLayoutChecked Flags = 1 << iota
	// FlagStartupOnly says that every function the patch redirects runs only
	// at process start-up: applying it changes nothing a running process
	// executes, so it does not protect the process; a restart does. Set only
	// when the patch author allowed it (hotpatch build --allow-startup-only).
	FlagStartupOnly
)

// knownFlags are the Flags this version understands.
const knownFlags = FlagLayoutChecked | FlagStartupOnly

// knownFuncFlags are the FuncFlags this version understands.
const knownFuncFlags = FuncNew | FuncNoRedirect | FuncExported

// Function is one function of the patch: a replaced original (with the hash
// of its original bytes) and/or new code carried in the Text blob.
type Function struct {
	// Name is the symbol name, e.g. "parse_header" or "parse_header.cold".
	Name string
	// File is the source file the symbol belongs to when it is a local
	// (static) symbol, "" for global symbols.
	File  string
	Flags FuncFlags

	// OldAddr and OldSize give the link-time range of the original function
	// in the target module; OldSHA256 is the SHA-256 of those OldSize bytes as
	// they are in the file. All zero for FuncNew.
	OldAddr   uint64
	OldSize   uint64
	OldSHA256 [32]byte

	// NewOffset and NewSize locate the new code in Patch.Text. NewSize is 0
	// when the function has no new code (a cold part that the fix removed).
	NewOffset uint64
	NewSize   uint64
}

// StartupOnly reports whether the patch changes only start-up code, so a
// process it is applied to still needs a restart to run the fix.
func (p *Patch) StartupOnly() bool { return p.Flags&FlagStartupOnly != 0 }

// Replaces reports whether the function replaces code of the original module.
func (f *Function) Replaces() bool { return f.Flags&FuncNew == 0 }

// Redirected reports whether the original entry gets a jump to the new code.
func (f *Function) Redirected() bool {
	return f.Replaces() && f.Flags&FuncNoRedirect == 0 && f.NewSize > 0
}

// Section names a blob of the patch.
type Section uint8

const (
	// Text holds the new code (mapped read+execute).
	Text Section = 1
	// ROData holds new read-only data (mapped read-only after relocation).
	ROData Section = 2
	// Data holds new writable data with initial values (mapped read+write).
	Data Section = 3
	// BSS is new zero-initialised writable data; it has a size but no bytes.
	BSS Section = 4
)

func (s Section) String() string {
	switch s {
	case Text:
		return "text"
	case ROData:
		return "rodata"
	case Data:
		return "data"
	case BSS:
		return "bss"
	}
	return fmt.Sprintf("section(%d)", uint8(s))
}

// Object is a named piece of new data carried by the patch, for inspection
// and diagnostics. Unnamed pieces (string literals) are named "<section>+off".
type Object struct {
	Name    string
	Section Section // ROData, Data or BSS
	Offset  uint64
	Size    uint64
}

// RelocType says how a relocated field is computed and how wide it is.
// T is the resolved target address (see RelocTarget), A the addend and P the
// run-time address of the field itself.
type RelocType uint8

const (
	// PC32 writes int32(T + A - P); it must fit in 32 signed bits.
	PC32 RelocType = 1
	// Abs64 writes uint64(T + A).
	Abs64 RelocType = 2
	// Abs32 writes uint32(T + A); it must fit in 32 unsigned bits.
	Abs32 RelocType = 3
	// Abs32S writes int32(T + A); it must fit in 32 signed bits.
	Abs32S RelocType = 4
)

func (t RelocType) String() string {
	switch t {
	case PC32:
		return "pc32"
	case Abs64:
		return "abs64"
	case Abs32:
		return "abs32"
	case Abs32S:
		return "abs32s"
	}
	return fmt.Sprintf("reloc-type(%d)", uint8(t))
}

// Size returns the width of the relocated field in bytes.
func (t RelocType) Size() int {
	if t == Abs64 {
		return 8
	}
	return 4
}

// TargetKind says what a relocation refers to.
type TargetKind uint8

const (
	// InPatch refers to Offset bytes into one of the patch's own sections.
	InPatch TargetKind = 1
	// InModule refers to a link-time address (Addr) of the target module; the
	// load bias is added at apply time (zero for Executable).
	InModule TargetKind = 2
	// External refers to a symbol defined by another module of the process
	// (Symbol, optionally Version), resolved from the process's own mappings.
	External TargetKind = 3
)

// RelocTarget is what a relocation points at.
type RelocTarget struct {
	Kind TargetKind

	Section Section // InPatch: the section
	Offset  uint64  // InPatch: offset in Section
	Addr    uint64  // InModule: link-time address in the target module
	Symbol  string  // External: symbol name, e.g. "snprintf"
	Version string  // External: symbol version, e.g. "GLIBC_2.2.5", or ""

	// Indirect asks for the address of an 8-byte slot that holds the target's
	// address (a GOT entry), instead of the target's address itself. The apply
	// side allocates and fills such slots in patch memory.
	Indirect bool
}

// Reloc is one field of a patch section that must be fixed up at apply time.
type Reloc struct {
	Section Section // Text, ROData or Data: where the field is
	Offset  uint64  // offset of the field in Section
	Type    RelocType
	Target  RelocTarget
	Addend  int64
}

// Patch is a parsed, verified patch: inert data that needs no ptrace to use.
// It is produced by the builder and by Load; it is never changed after that.
type Patch struct {
	// ID names the patch; unique per publisher, e.g. "ledger-CVE-2026-1234".
	ID string
	// Version orders successive patches with the same ID (patch levels).
	Version     uint32
	CVEs        []string
	Severity    Severity
	Description string

	Target    Target
	Functions []Function
	Objects   []Object
	Relocs    []Reloc

	Text    []byte
	ROData  []byte
	Data    []byte
	BSSSize uint64

	// Unwind is call frame information for the code in Text, in the
	// .eh_frame format that unwind.Extract makes: absolute 8-byte
	// addresses that are offsets into Text (the engine adds where Text
	// lands). The engine uses it to unwind threads running patch code; nil
	// when the fixed build had none.
	Unwind []byte

	// Flags carry what the builder found about the patch as a whole.
	Flags Flags

	// Signer is the ed25519 public key that signed the patch; set by Load and
	// Sign. Whether it is trusted is the caller's decision (see Verify).
	Signer PublicKey
}

// Severity is the patch author's rating of the fixed vulnerability.
type Severity string

const (
	SeverityNone     Severity = ""
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)
