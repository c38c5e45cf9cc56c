package patch

import (
	"crypto/ed25519"
	"fmt"
	"regexp"
	"slices"
	"unicode"
	"unicode/utf8"
)

var (
	idPattern  = regexp.MustCompile(`^[A-Za-z0-9._:@+-]{1,128}$`)
	cvePattern = regexp.MustCompile(`^CVE-[0-9]{4}-[0-9]{4,}$`)
)

// Validate checks that p is a patch the engine can apply without reading
// outside of it: every range lies within its blob, every enum is known,
// every name is printable, and no two redirects or relocated fields
// overlap. Sign and Load call it; an error wraps ErrFormat and names the
// offending item. Validate does not check the signature or the signer's
// trust (see Load and Verify), and knows nothing of the target module.
func (p *Patch) Validate() error {
	if !idPattern.MatchString(p.ID) {
		return formatErrorf("id %q must be 1 to %d of A-Z a-z 0-9 . _ : @ + -", p.ID, maxID)
	}
	if len(p.CVEs) > maxCVEs {
		return formatErrorf("%d CVEs, more than the limit of %d", len(p.CVEs), maxCVEs)
	}
	seen := make(map[string]bool, len(p.CVEs))
	for _, c := range p.CVEs {
		if len(c) > maxString || !cvePattern.MatchString(c) {
			return formatErrorf("CVE id %q does not look like CVE-YYYY-NNNN", c)
		}
		if seen[c] {
			return formatErrorf("CVE id %s is listed twice", c)
		}
		seen[c] = true
	}
	if _, ok := severityCode(p.Severity); !ok {
		return formatErrorf("unknown severity %q (want low, medium, high, critical or empty)", p.Severity)
	}
	if len(p.Description) > maxDescription {
		return formatErrorf("description is %d bytes, more than the limit of %d", len(p.Description), maxDescription)
	}
	if why := checkText(p.Description, true); why != "" {
		return formatErrorf("description %s", why)
	}
	if len(p.Signer) != 0 && len(p.Signer) != ed25519.PublicKeySize {
		return formatErrorf("signer key is %d bytes, want %d", len(p.Signer), ed25519.PublicKeySize)
	}
	if p.Flags&^knownFlags != 0 {
		return formatErrorf("unknown patch flags %#x", uint32(p.Flags&^knownFlags))
	}
	if err := p.Target.validate(); err != nil {
		return err
	}
	if err := p.validateFunctions(); err != nil {
		return err
	}
	if err := p.validateObjects(); err != nil {
		return err
	}
	return p.validateRelocs()
}

func (t *Target) validate() error {
	if t.Name == "" {
		return formatErrorf("target name is empty")
	}
	if err := checkName("target name", t.Name); err != nil {
		return err
	}
	if len(t.BuildID) == 0 || len(t.BuildID) > maxBuildID {
		return formatErrorf("target build-id is %d bytes, want 1 to %d", len(t.BuildID), maxBuildID)
	}
	if _, ok := archCode(t.Arch); !ok {
		return formatErrorf("target %q: unknown arch %q", t.Name, t.Arch)
	}
	if t.Type < Executable || t.Type > SharedObject {
		return formatErrorf("target %q: unknown module type %d", t.Name, uint8(t.Type))
	}
	return nil
}

// describe names a function in messages: "parse" or "parse" (ledger.c).
func (f *Function) describe() string {
	if f.File != "" {
		return fmt.Sprintf("function %q (%q)", f.Name, f.File)
	}
	return fmt.Sprintf("function %q", f.Name)
}

func (p *Patch) validateFunctions() error {
	if len(p.Functions) == 0 {
		return formatErrorf("patch has no functions")
	}
	if len(p.Functions) > maxFunctions {
		return formatErrorf("%d functions, more than the limit of %d", len(p.Functions), maxFunctions)
	}
	text := uint64(len(p.Text))
	var redirected []*Function
	for i := range p.Functions {
		f := &p.Functions[i]
		if f.Name == "" {
			return formatErrorf("function %d has no name", i)
		}
		if err := checkName(fmt.Sprintf("function %d name", i), f.Name); err != nil {
			return err
		}
		if err := checkName(f.describe()+" file", f.File); err != nil {
			return err
		}
		if f.Flags&^knownFuncFlags != 0 {
			return formatErrorf("%s has unknown flags %#x", f.describe(), uint8(f.Flags))
		}
		if f.NewSize > text || f.NewOffset > text-f.NewSize {
			return formatErrorf("%s code [%#x,%#x) exceeds text size %#x", f.describe(), f.NewOffset, f.NewOffset+f.NewSize, text)
		}
		if f.Flags&FuncExported != 0 && f.Flags&FuncNew == 0 {
			return formatErrorf("%s is marked exported but is not new", f.describe())
		}
		if f.Flags&FuncNew != 0 {
			switch {
			case f.Flags&FuncNoRedirect != 0:
				return formatErrorf("%s is new and must not be marked no-redirect", f.describe())
			case f.OldAddr != 0 || f.OldSize != 0 || f.OldSHA256 != [32]byte{}:
				return formatErrorf("%s is new but has an old address, size or hash", f.describe())
			case f.NewSize == 0:
				return formatErrorf("%s is new but has no code", f.describe())
			}
			continue
		}
		if f.OldSize == 0 {
			return formatErrorf("%s replaces code but its old size is 0", f.describe())
		}
		if f.OldAddr+f.OldSize < f.OldAddr {
			return formatErrorf("%s old range [%#x,+%#x) wraps around the address space", f.describe(), f.OldAddr, f.OldSize)
		}
		if f.NewSize == 0 && f.Flags&FuncNoRedirect == 0 {
			return formatErrorf("%s replaces code but has no new code and is not marked no-redirect", f.describe())
		}
		if f.Redirected() {
			redirected = append(redirected, f)
		}
	}
	slices.SortFunc(redirected, func(a, b *Function) int {
		switch {
		case a.OldAddr < b.OldAddr:
			return -1
		case a.OldAddr > b.OldAddr:
			return 1
		}
		return 0
	})
	for i := 1; i < len(redirected); i++ {
		a, b := redirected[i-1], redirected[i]
		if b.OldAddr < a.OldAddr+a.OldSize {
			return formatErrorf("%s old range [%#x,%#x) overlaps %s old range [%#x,%#x); both would be redirected",
				a.describe(), a.OldAddr, a.OldAddr+a.OldSize, b.describe(), b.OldAddr, b.OldAddr+b.OldSize)
		}
	}
	return nil
}

// sectionSize returns the size of section s of p (BSS: BSSSize).
func (p *Patch) sectionSize(s Section) uint64 {
	switch s {
	case Text:
		return uint64(len(p.Text))
	case ROData:
		return uint64(len(p.ROData))
	case Data:
		return uint64(len(p.Data))
	case BSS:
		return p.BSSSize
	}
	return 0
}

func (p *Patch) validateObjects() error {
	if p.BSSSize > maxBSS {
		return formatErrorf("bss size %#x is more than the limit of %#x", p.BSSSize, uint64(maxBSS))
	}
	if len(p.Objects) > maxObjects {
		return formatErrorf("%d objects, more than the limit of %d", len(p.Objects), maxObjects)
	}
	for i := range p.Objects {
		o := &p.Objects[i]
		if o.Name == "" {
			return formatErrorf("object %d has no name", i)
		}
		if err := checkName(fmt.Sprintf("object %d name", i), o.Name); err != nil {
			return err
		}
		switch o.Section {
		case ROData, Data, BSS:
		default:
			return formatErrorf("object %q is in section %v; objects live in rodata, data or bss", o.Name, o.Section)
		}
		size := p.sectionSize(o.Section)
		if o.Size > size || o.Offset > size-o.Size {
			return formatErrorf("object %q [%#x,%#x) exceeds %v size %#x", o.Name, o.Offset, o.Offset+o.Size, o.Section, size)
		}
	}
	return nil
}

func (p *Patch) validateRelocs() error {
	if len(p.Relocs) > maxRelocs {
		return formatErrorf("%d relocations, more than the limit of %d", len(p.Relocs), maxRelocs)
	}
	for i := range p.Relocs {
		r := &p.Relocs[i]
		switch r.Section {
		case Text, ROData, Data:
		default:
			return formatErrorf("relocation %d is in section %v; relocated fields live in text, rodata or data", i, r.Section)
		}
		if r.Type < PC32 || r.Type > Abs32S {
			return formatErrorf("relocation %d at %v+%#x has unknown type %d", i, r.Section, r.Offset, uint8(r.Type))
		}
		size, w := p.sectionSize(r.Section), uint64(r.Type.Size())
		if w > size || r.Offset > size-w {
			return formatErrorf("relocation %d field [%#x,%#x) exceeds %v size %#x", i, r.Offset, r.Offset+w, r.Section, size)
		}
		if err := r.Target.validate(p, i); err != nil {
			return err
		}
	}
	// Relocated fields must not overlap: the second write would corrupt
	// the first.
	order := make([]int, len(p.Relocs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		ra, rb := &p.Relocs[a], &p.Relocs[b]
		switch {
		case ra.Section != rb.Section:
			return int(ra.Section) - int(rb.Section)
		case ra.Offset < rb.Offset:
			return -1
		case ra.Offset > rb.Offset:
			return 1
		}
		return a - b
	})
	for k := 1; k < len(order); k++ {
		a, b := &p.Relocs[order[k-1]], &p.Relocs[order[k]]
		if a.Section == b.Section && b.Offset < a.Offset+uint64(a.Type.Size()) {
			return formatErrorf("relocation %d field at %v+%#x overlaps relocation %d field at %v+%#x",
				order[k], b.Section, b.Offset, order[k-1], a.Section, a.Offset)
		}
	}
	return nil
}

func (t *RelocTarget) validate(p *Patch, i int) error {
	switch t.Kind {
	case InPatch:
		switch t.Section {
		case Text, ROData, Data, BSS:
		default:
			return formatErrorf("relocation %d target has unknown section %d", i, uint8(t.Section))
		}
		if size := p.sectionSize(t.Section); t.Offset > size {
			return formatErrorf("relocation %d target %v+%#x is beyond %v size %#x", i, t.Section, t.Offset, t.Section, size)
		}
		if t.Addr != 0 || t.Symbol != "" || t.Version != "" {
			return formatErrorf("relocation %d target is in the patch but also has an address or symbol", i)
		}
	case InModule:
		if t.Section != 0 || t.Offset != 0 || t.Symbol != "" || t.Version != "" {
			return formatErrorf("relocation %d target is in the module but also has a section or symbol", i)
		}
	case External:
		if t.Symbol == "" {
			return formatErrorf("relocation %d target is external but has no symbol name", i)
		}
		if err := checkName(fmt.Sprintf("relocation %d symbol", i), t.Symbol); err != nil {
			return err
		}
		if err := checkName(fmt.Sprintf("relocation %d symbol %q version", i, t.Symbol), t.Version); err != nil {
			return err
		}
		if t.Section != 0 || t.Offset != 0 || t.Addr != 0 {
			return formatErrorf("relocation %d target %q is external but also has a section or address", i, t.Symbol)
		}
	default:
		return formatErrorf("relocation %d has unknown target kind %d", i, uint8(t.Kind))
	}
	return nil
}

// checkName checks a name-like string: at most maxString bytes of
// printable UTF-8.
func checkName(what, s string) error {
	if len(s) > maxString {
		return formatErrorf("%s is %d bytes, more than the limit of %d", what, len(s), maxString)
	}
	if why := checkText(s, false); why != "" {
		return formatErrorf("%s %q %s", what, s, why)
	}
	return nil
}

// checkText returns why s is unfit to be shown on a terminal ("" if fit):
// invalid UTF-8 or control characters (newline and tab allowed if
// multiline), which could forge output of "hotpatch inspect".
func checkText(s string, multiline bool) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || isBidi(r) {
			return fmt.Sprintf("contains the control character %U", r)
		}
	}
	return ""
}

// isBidi reports the bidirectional formatting characters, which can make a
// terminal show text in another order than it is stored ("Trojan Source").
func isBidi(r rune) bool {
	return (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069') || r == '\u200e' || r == '\u200f' || r == '\u061c'
}
