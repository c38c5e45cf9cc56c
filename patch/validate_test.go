package patch

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestValidateAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Patch)
	}{
		{"test patch", func(*Patch) {}},
		{"minimal", func(p *Patch) {
			*p = Patch{ID: "x", Target: Target{Name: "a", BuildID: []byte{1}, Arch: ArchARM64, Type: SharedObject},
				Functions: []Function{{Name: "f", OldAddr: 0x10, OldSize: 1, NewSize: 1}}, Text: []byte{0xc3}}
		}},
		{"id charset", func(p *Patch) { p.ID = "a-Z_0.9:x@y+z" }},
		{"id 128", func(p *Patch) { p.ID = strings.Repeat("a", 128) }},
		{"long CVE number", func(p *Patch) { p.CVEs = []string{"CVE-2026-1234567"} }},
		{"256 CVEs", func(p *Patch) {
			p.CVEs = nil
			for i := range 256 {
				p.CVEs = append(p.CVEs, fmt.Sprintf("CVE-2026-%d", 10000+i))
			}
		}},
		{"no severity", func(p *Patch) { p.Severity = SeverityNone }},
		{"description tab and newline", func(p *Patch) { p.Description = "a\n\tb" }},
		{"unicode names", func(p *Patch) { p.Functions[0].Name = "parsé_header"; p.Description = "fixé" }},
		{"adjacent redirects", func(p *Patch) { p.Functions[1].Flags = 0; p.Functions[1].OldAddr = 0x1230 - 0x20 }},
		{"cold part overlapping a redirect", func(p *Patch) { p.Functions[1].OldAddr = 0x1240 }},
		{"object at end of section", func(p *Patch) { p.Objects[0].Offset, p.Objects[0].Size = 0x30, 0 }},
		{"reloc field at end of section", func(p *Patch) { p.Relocs[0].Offset = 0xfc }},
		{"target at end of bss", func(p *Patch) { p.Relocs[6].Target.Offset = 0x20 }},
		{"indirect external", func(p *Patch) { p.Relocs[2].Target.Indirect = true }},
		{"adjacent relocs", func(p *Patch) { p.Relocs[1].Offset = 0x14 }},
		{"same offset, different sections", func(p *Patch) { p.Relocs[0].Offset = 8 }},
		{"old range to the top", func(p *Patch) { p.Functions[0].OldAddr = math.MaxUint64 - 0x90 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testPatch()
			tt.modify(p)
			if err := p.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Patch)
		want   string
	}{
		{"empty id", func(p *Patch) { p.ID = "" }, `id ""`},
		{"id with space", func(p *Patch) { p.ID = "a b" }, `id "a b"`},
		{"id with slash", func(p *Patch) { p.ID = "../x" }, `id "../x"`},
		{"id too long", func(p *Patch) { p.ID = strings.Repeat("a", 129) }, "id"},
		{"bad CVE", func(p *Patch) { p.CVEs = []string{"CVE-26-1"} }, `CVE id "CVE-26-1"`},
		{"lowercase CVE", func(p *Patch) { p.CVEs = []string{"cve-2026-0001"} }, `CVE id "cve-2026-0001"`},
		{"CVE with newline", func(p *Patch) { p.CVEs = []string{"CVE-2026-0001\n"} }, `CVE id "CVE-2026-0001\n"`},
		{"duplicate CVE", func(p *Patch) { p.CVEs = []string{"CVE-2026-0001", "CVE-2026-0001"} }, "CVE id CVE-2026-0001 is listed twice"},
		{"257 CVEs", func(p *Patch) { p.CVEs = make([]string, 257) }, "257 CVEs"},
		{"severity", func(p *Patch) { p.Severity = "HIGH" }, `unknown severity "HIGH"`},
		{"description escape", func(p *Patch) { p.Description = "ok\x1b[2Jforged" }, "description contains the control character U+001B"},
		{"description bidi", func(p *Patch) { p.Description = "abc\u202edef" }, "description contains the control character U+202E"},
		{"description not utf-8", func(p *Patch) { p.Description = "\xff" }, "description is not valid UTF-8"},
		{"description too long", func(p *Patch) { p.Description = strings.Repeat("a", maxDescription+1) }, "description is 65537 bytes"},
		{"signer length", func(p *Patch) { p.Signer = make(PublicKey, 31) }, "signer key is 31 bytes"},
		{"no target name", func(p *Patch) { p.Target.Name = "" }, "target name is empty"},
		{"target name control", func(p *Patch) { p.Target.Name = "led\rger" }, `target name "led\rger" contains`},
		{"no build-id", func(p *Patch) { p.Target.BuildID = nil }, "target build-id is 0 bytes"},
		{"long build-id", func(p *Patch) { p.Target.BuildID = make([]byte, 65) }, "target build-id is 65 bytes"},
		{"arch", func(p *Patch) { p.Target.Arch = "x86-64" }, `target "ledger": unknown arch "x86-64"`},
		{"module type", func(p *Patch) { p.Target.Type = 0 }, `target "ledger": unknown module type 0`},
		{"no functions", func(p *Patch) { p.Functions = nil }, "patch has no functions"},
		{"unnamed function", func(p *Patch) { p.Functions[2].Name = "" }, "function 2 has no name"},
		{"function name too long", func(p *Patch) { p.Functions[2].Name = strings.Repeat("f", 4097) }, "function 2 name is 4097 bytes"},
		{"function file control", func(p *Patch) { p.Functions[3].File = "a\x00.c" }, `function "check_memo" ("a\x00.c") file`},
		{"function flags", func(p *Patch) { p.Functions[0].Flags = 0x10 }, `function "parse_header" has unknown flags 0x10`},
		{"code beyond text", func(p *Patch) { p.Functions[0].NewOffset, p.Functions[0].NewSize = 0x40, 0x50; p.Text = p.Text[:0x80] }, `function "parse_header" code [0x40,0x90) exceeds text size 0x80`},
		{"code size beyond text", func(p *Patch) { p.Functions[3].NewSize = 0x101 }, `function "check_memo" ("ledger.c") code [0xc0,0x1c1) exceeds text size 0x100`},
		{"code offset overflow", func(p *Patch) { p.Functions[0].NewOffset = math.MaxUint64 - 1 }, `function "parse_header" code`},
		{"new with old address", func(p *Patch) { p.Functions[3].OldAddr = 0x1000 }, `function "check_memo" ("ledger.c") is new but has an old address`},
		{"new with old hash", func(p *Patch) { p.Functions[3].OldSHA256[0] = 1 }, `function "check_memo" ("ledger.c") is new but has an old address, size or hash`},
		{"new without code", func(p *Patch) { p.Functions[3].NewSize = 0 }, `function "check_memo" ("ledger.c") is new but has no code`},
		{"new no-redirect", func(p *Patch) { p.Functions[3].Flags |= FuncNoRedirect }, `function "check_memo" ("ledger.c") is new and must not be marked no-redirect`},
		{"replaced without old size", func(p *Patch) { p.Functions[0].OldSize = 0 }, `function "parse_header" replaces code but its old size is 0`},
		{"replaced without new code", func(p *Patch) { p.Functions[0].NewSize = 0 }, `function "parse_header" replaces code but has no new code`},
		{"old range wraps", func(p *Patch) { p.Functions[0].OldAddr = math.MaxUint64 - 0x10 }, `function "parse_header" old range [0xffffffffffffffef,+0x90) wraps`},
		{"overlapping redirects", func(p *Patch) { p.Functions[1].Flags = 0; p.Functions[1].OldAddr = 0x1220 }, `function "parse_header.cold" old range [0x1220,0x1240) overlaps function "parse_header" old range [0x1230,0x12c0)`},
		{"same redirect twice", func(p *Patch) { p.Functions = append(p.Functions, p.Functions[0]) }, `function "parse_header" old range [0x1230,0x12c0) overlaps function "parse_header"`},
		{"unnamed object", func(p *Patch) { p.Objects[1].Name = "" }, "object 1 has no name"},
		{"object in text", func(p *Patch) { p.Objects[1].Section = Text }, `object "memo_jump_table" is in section text`},
		{"object unknown section", func(p *Patch) { p.Objects[1].Section = 0 }, `object "memo_jump_table" is in section section(0)`},
		{"object beyond rodata", func(p *Patch) { p.Objects[1].Size = 0x21 }, `object "memo_jump_table" [0x10,0x31) exceeds rodata size 0x30`},
		{"object beyond bss", func(p *Patch) { p.Objects[3].Offset = 1 }, `object "memo_scratch" [0x1,0x21) exceeds bss size 0x20`},
		{"object offset overflow", func(p *Patch) { p.Objects[2].Offset = math.MaxUint64 }, `object "memo_limits"`},
		{"bss too big", func(p *Patch) { p.BSSSize = maxBSS + 1 }, "bss size 0x40000001"},
		{"reloc in bss", func(p *Patch) { p.Relocs[3].Section = BSS }, "relocation 3 is in section bss"},
		{"reloc type", func(p *Patch) { p.Relocs[3].Type = 0 }, "relocation 3 at text+0x40 has unknown type 0"},
		{"reloc beyond text", func(p *Patch) { p.Relocs[3].Offset = 0xfd }, "relocation 3 field [0xfd,0x101) exceeds text size 0x100"},
		{"abs64 beyond data", func(p *Patch) { p.Relocs[10].Offset = 9 }, "relocation 10 field [0x9,0x11) exceeds data size 0x10"},
		{"reloc offset overflow", func(p *Patch) { p.Relocs[10].Offset = math.MaxUint64 - 2 }, "relocation 10 field"},
		{"overlapping relocs", func(p *Patch) { p.Relocs[1].Offset = 0x12 }, "relocation 1 field at text+0x12 overlaps relocation 0 field at text+0x10"},
		{"duplicate reloc", func(p *Patch) { p.Relocs = append(p.Relocs, p.Relocs[4]) }, "relocation 12 field at text+0x50 overlaps relocation 4"},
		{"target kind", func(p *Patch) { p.Relocs[5].Target.Kind = 0 }, "relocation 5 has unknown target kind 0"},
		{"in-patch target section", func(p *Patch) { p.Relocs[5].Target.Section = 7 }, "relocation 5 target has unknown section 7"},
		{"in-patch target beyond text", func(p *Patch) { p.Relocs[5].Target.Offset = 0x101 }, "relocation 5 target text+0x101 is beyond text size 0x100"},
		{"in-patch target beyond bss", func(p *Patch) { p.Relocs[6].Target.Offset = 0x21 }, "relocation 6 target bss+0x21 is beyond bss size 0x20"},
		{"in-patch target with symbol", func(p *Patch) { p.Relocs[5].Target.Symbol = "x" }, "relocation 5 target is in the patch but also has"},
		{"in-module target with section", func(p *Patch) { p.Relocs[1].Target.Section = Text }, "relocation 1 target is in the module but also has"},
		{"external without symbol", func(p *Patch) { p.Relocs[2].Target.Symbol = "" }, "relocation 2 target is external but has no symbol name"},
		{"external with address", func(p *Patch) { p.Relocs[2].Target.Addr = 1 }, `relocation 2 target "snprintf" is external but also has`},
		{"external symbol control", func(p *Patch) { p.Relocs[2].Target.Symbol = "snprintf\x1b" }, `relocation 2 symbol "snprintf\x1b" contains`},
		{"external version control", func(p *Patch) { p.Relocs[2].Target.Version = "GLIBC\n" }, `relocation 2 symbol "snprintf" version "GLIBC\n" contains`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testPatch()
			tt.modify(p)
			err := p.Validate()
			if err == nil {
				t.Fatalf("Validate succeeded, want an error mentioning %q", tt.want)
			}
			checkLoadError(t, err)
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %q does not wrap ErrFormat", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\n  does not mention %q", err, tt.want)
			}
		})
	}
}
