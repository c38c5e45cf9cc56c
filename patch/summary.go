package patch

import (
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Summary is what "hotpatch inspect" shows of a patch, shaped for JSON
// (snake_case keys, addresses and hashes as hex strings).
type Summary struct {
	ID          string   `json:"id"`
	Version     uint32   `json:"version"`
	CVEs        []string `json:"cves"`
	Severity    string   `json:"severity"`
	Description string   `json:"description"`
	// SignerKeyID is the key id of Patch.Signer, "" for an unsigned patch.
	SignerKeyID string `json:"signer_key_id"`

	Target    TargetSummary     `json:"target"`
	Functions []FunctionSummary `json:"functions"`
	Objects   []ObjectSummary   `json:"objects"`
	Sizes     SizeSummary       `json:"sizes"`

	Relocations int `json:"relocations"`
	// RelocationsByKind counts relocations by target kind: "in_patch",
	// "in_module" and "external" (always all three keys).
	RelocationsByKind map[string]int `json:"relocations_by_kind"`
	// ExternalSymbols lists the symbols of other modules the patch uses,
	// as "name@version" or "name", sorted and unique.
	ExternalSymbols []string `json:"external_symbols"`

	// LayoutChecked tells whether the builder compared the type layouts of
	// both builds with DWARF (FlagLayoutChecked); false means not checked.
	LayoutChecked bool `json:"layout_checked"`
	// StartupOnly tells that the patch changes only start-up code
	// (FlagStartupOnly): a process it is applied to needs a restart.
	StartupOnly bool `json:"startup_only"`
	// NewExports lists the new functions that the fixed build exports but
	// the patch carries hidden (FuncExported), sorted.
	NewExports []string `json:"new_exports"`
}

// TargetSummary describes the target module.
type TargetSummary struct {
	Name    string `json:"name"`
	BuildID string `json:"build_id"` // hex
	Arch    string `json:"arch"`
	Type    string `json:"type"` // "executable", "pie" or "shared-object"
}

// Function kinds in a FunctionSummary.
const (
	FuncKindReplaced = "replaced"
	FuncKindNew      = "new"
	FuncKindColdPart = "cold-part"
)

// FunctionSummary describes one function of the patch.
type FunctionSummary struct {
	Name string `json:"name"`
	File string `json:"file,omitempty"`
	// Kind is FuncKindReplaced, FuncKindNew, or FuncKindColdPart (replaced,
	// never redirected: entered only from its parent).
	Kind string `json:"kind"`
	// Exported: a new function the fixed build exports; the patch carries
	// it hidden, so other modules cannot call it (FuncExported).
	Exported  bool   `json:"exported,omitempty"`
	OldAddr   string `json:"old_addr,omitempty"` // "0x401230"; absent for new functions
	OldSize   uint64 `json:"old_size"`
	NewSize   uint64 `json:"new_size"`
	OldSHA256 string `json:"old_sha256,omitempty"` // hex; absent for new functions
}

// ObjectSummary describes one piece of new data.
type ObjectSummary struct {
	Name    string `json:"name"`
	Section string `json:"section"`
	Size    uint64 `json:"size"`
}

// SizeSummary gives the sizes of the patch's sections in bytes.
type SizeSummary struct {
	Text   uint64 `json:"text"`
	ROData uint64 `json:"rodata"`
	Data   uint64 `json:"data"`
	BSS    uint64 `json:"bss"`
}

// Summary describes p for people and scripts. Lists are never nil, so
// JSON shows [] rather than null.
func (p *Patch) Summary() Summary {
	s := Summary{
		ID:          p.ID,
		Version:     p.Version,
		CVEs:        append([]string{}, p.CVEs...),
		Severity:    string(p.Severity),
		Description: p.Description,
		Target: TargetSummary{
			Name:    p.Target.Name,
			BuildID: hex.EncodeToString(p.Target.BuildID),
			Arch:    string(p.Target.Arch),
			Type:    p.Target.Type.String(),
		},
		Functions: make([]FunctionSummary, 0, len(p.Functions)),
		Objects:   make([]ObjectSummary, 0, len(p.Objects)),
		Sizes: SizeSummary{
			Text:   uint64(len(p.Text)),
			ROData: uint64(len(p.ROData)),
			Data:   uint64(len(p.Data)),
			BSS:    p.BSSSize,
		},
		Relocations:       len(p.Relocs),
		RelocationsByKind: map[string]int{"in_patch": 0, "in_module": 0, "external": 0},
		ExternalSymbols:   []string{},
		LayoutChecked:     p.Flags&FlagLayoutChecked != 0,
		StartupOnly:       p.StartupOnly(),
		NewExports:        []string{},
	}
	if len(p.Signer) != 0 {
		s.SignerKeyID = KeyID(p.Signer)
	}
	for i := range p.Functions {
		f := &p.Functions[i]
		fs := FunctionSummary{Name: f.Name, File: f.File, Kind: FuncKindReplaced, OldSize: f.OldSize, NewSize: f.NewSize, Exported: f.Flags&FuncExported != 0}
		if fs.Exported {
			s.NewExports = append(s.NewExports, f.Name)
		}
		switch {
		case f.Flags&FuncNew != 0:
			fs.Kind = FuncKindNew
		case f.Flags&FuncNoRedirect != 0:
			fs.Kind = FuncKindColdPart
		}
		if fs.Kind != FuncKindNew {
			fs.OldAddr = fmt.Sprintf("%#x", f.OldAddr)
			fs.OldSHA256 = hex.EncodeToString(f.OldSHA256[:])
		}
		s.Functions = append(s.Functions, fs)
	}
	for _, o := range p.Objects {
		s.Objects = append(s.Objects, ObjectSummary{Name: o.Name, Section: o.Section.String(), Size: o.Size})
	}
	for _, r := range p.Relocs {
		switch r.Target.Kind {
		case InPatch:
			s.RelocationsByKind["in_patch"]++
		case InModule:
			s.RelocationsByKind["in_module"]++
		case External:
			s.RelocationsByKind["external"]++
			name := r.Target.Symbol
			if r.Target.Version != "" {
				name += "@" + r.Target.Version
			}
			s.ExternalSymbols = append(s.ExternalSymbols, name)
		}
	}
	slices.Sort(s.NewExports)
	slices.Sort(s.ExternalSymbols)
	s.ExternalSymbols = slices.Compact(s.ExternalSymbols)
	return s
}

// WriteText writes s as an aligned report for a terminal. Text that a
// loaded patch cannot contain (control characters) is shown quoted, so a
// summary of an unvalidated patch cannot forge the report either.
func (s Summary) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	dash := func(v string) string {
		if v == "" {
			return "-"
		}
		return clean(v)
	}

	line("patch\t%s (level %d)", clean(s.ID), s.Version)
	line("cves\t%s", dash(clean(strings.Join(s.CVEs, ", "))))
	line("severity\t%s", dash(s.Severity))
	if s.SignerKeyID != "" {
		line("signer\tkey %s", clean(s.SignerKeyID))
	} else {
		line("signer\tnot signed")
	}
	line("target\t%s (%s, %s)", clean(s.Target.Name), clean(s.Target.Arch), clean(s.Target.Type))
	line("build-id\t%s", dash(s.Target.BuildID))
	desc := strings.Split(s.Description, "\n")
	for i, d := range desc {
		label := ""
		if i == 0 {
			label = "description"
		}
		d = strings.ReplaceAll(d, "\t", "    ")
		if i == 0 {
			d = dash(d)
		} else {
			d = clean(d)
		}
		line("%s\t%s", label, d)
	}
	if s.StartupOnly {
		line("effect\tSTARTUP-ONLY: the patch changes only code that runs at process start-up;")
		line("\ta process it is applied to stays vulnerable: restart needed")
	} else {
		line("effect\tnot start-up only (takes effect in running processes)")
	}
	if s.LayoutChecked {
		line("type layouts\tchecked with DWARF: unchanged")
	} else {
		line("type layouts\tnot checked (no DWARF)")
	}
	if len(s.NewExports) > 0 {
		line("api change\tnew exported function(s) %s carried hidden: other modules cannot call them until the fixed build is loaded", clean(strings.Join(s.NewExports, ", ")))
	}
	line("")

	var counts [3]int
	for _, f := range s.Functions {
		switch f.Kind {
		case FuncKindReplaced:
			counts[0]++
		case FuncKindNew:
			counts[1]++
		case FuncKindColdPart:
			counts[2]++
		}
	}
	line("functions: %d (%d replaced, %d new, %d cold parts)", len(s.Functions), counts[0], counts[1], counts[2])
	if len(s.Functions) > 0 {
		line("  KIND\tNAME\tFILE\tOLD ADDR\tOLD SIZE\tNEW SIZE\tOLD SHA-256")
	}
	for _, f := range s.Functions {
		oldSize := "-"
		if f.Kind != FuncKindNew {
			oldSize = strconv.FormatUint(f.OldSize, 10)
		}
		line("  %s\t%s\t%s\t%s\t%s\t%d\t%s", clean(f.Kind), clean(f.Name), dash(f.File), dash(f.OldAddr), oldSize, f.NewSize, dash(f.OldSHA256))
	}
	line("")

	line("objects: %d", len(s.Objects))
	if len(s.Objects) > 0 {
		line("  SECTION\tSIZE\tNAME")
	}
	for _, o := range s.Objects {
		line("  %s\t%d\t%s", clean(o.Section), o.Size, clean(o.Name))
	}
	line("")

	line("sizes\ttext %d, rodata %d, data %d, bss %d bytes", s.Sizes.Text, s.Sizes.ROData, s.Sizes.Data, s.Sizes.BSS)
	line("relocations\t%d (%d in patch, %d in module, %d external)", s.Relocations,
		s.RelocationsByKind["in_patch"], s.RelocationsByKind["in_module"], s.RelocationsByKind["external"])
	if len(s.ExternalSymbols) == 0 {
		line("external symbols\t-")
	}
	for i, sym := range s.ExternalSymbols {
		label := ""
		if i == 0 {
			label = "external symbols"
		}
		line("%s\t%s", label, clean(sym))
	}
	return tw.Flush()
}

// clean returns s, or s quoted with escapes if it holds characters that
// could disturb a terminal or the report's columns.
func clean(s string) string {
	if checkText(s, false) == "" {
		return s
	}
	return strconv.QuoteToGraphic(s)
}
