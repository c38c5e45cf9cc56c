package patch

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./patch -run %s -update to create it)", err, t.Name())
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s is stale (-want +got); if the change is intended, run go test ./patch -run %s -update\n%s", path, t.Name(), diff)
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	p, _ := signedTestFile(t)
	_, pub := testKey("release")
	s := p.Summary()

	want := Summary{
		ID:          "ledger-memo",
		Version:     3,
		CVEs:        []string{"CVE-2026-0001", "CVE-2026-12345"},
		Severity:    "high",
		Description: "memo bounds check\nrejects memos longer than 64 bytes",
		SignerKeyID: KeyID(pub),
		Target:      TargetSummary{Name: "ledger", BuildID: "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3", Arch: "x86_64", Type: "pie"},
		Functions: []FunctionSummary{
			{Name: "parse_header", Kind: "replaced", OldAddr: "0x1230", OldSize: 0x90, NewSize: 0xa0, OldSHA256: hexSum("parse_header")},
			{Name: "parse_header.cold", Kind: "cold-part", OldAddr: "0x1100", OldSize: 0x20, NewSize: 0x18, OldSHA256: hexSum("parse_header.cold")},
			{Name: "format_line.cold", File: "ledger.c", Kind: "cold-part", OldAddr: "0x1400", OldSize: 0x10, OldSHA256: hexSum("format_line.cold")},
			{Name: "check_memo", File: "ledger.c", Kind: "new", NewSize: 0x40},
		},
		Objects: []ObjectSummary{
			{Name: ".LC3", Section: "rodata", Size: 0x10},
			{Name: "memo_jump_table", Section: "rodata", Size: 0x20},
			{Name: "memo_limits", Section: "data", Size: 0x10},
			{Name: "memo_scratch", Section: "bss", Size: 0x20},
		},
		Sizes:             SizeSummary{Text: 0x100, ROData: 0x30, Data: 0x10, BSS: 0x20},
		Relocations:       12,
		RelocationsByKind: map[string]int{"in_patch": 5, "in_module": 4, "external": 3},
		ExternalSymbols:   []string{"pthread_mutex_lock", "snprintf@GLIBC_2.2.5"},
		NewExports:        []string{},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("Summary (-want +got):\n%s", diff)
	}

	js, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "summary.json", append(js, '\n'))

	var text bytes.Buffer
	if err := s.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	golden(t, "summary.txt", text.Bytes())
}

func hexSum(s string) string {
	b := sum(s)
	return hex.EncodeToString(b[:])
}

func TestSummaryEmptyListsAreJSONArrays(t *testing.T) {
	t.Parallel()
	p := &Patch{ID: "x", Target: Target{Name: "a", BuildID: []byte{1}, Arch: ArchX86_64, Type: Executable}}
	js, err := json.Marshal(p.Summary())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"cves":[]`, `"functions":[]`, `"objects":[]`, `"external_symbols":[]`, `"signer_key_id":""`} {
		if !bytes.Contains(js, []byte(key)) {
			t.Errorf("JSON %s lacks %s", js, key)
		}
	}
}

// A summary of a patch that never went through Validate must not be able to
// send escape sequences to the terminal.
func TestWriteTextQuotesControlCharacters(t *testing.T) {
	t.Parallel()
	p := testPatch()
	p.Functions[0].Name = "evil\x1b[2J"
	p.Description = "line\x1b]0;title\x07"
	p.Relocs[2].Target.Symbol = "sym\u202e"
	var b bytes.Buffer
	if err := p.Summary().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07\u202e") {
		t.Errorf("WriteText passed control characters through:\n%s", out)
	}
	for _, want := range []string{`"evil\x1b[2J"`, `"line\x1b]0;title\a"`, `"sym\u202e@GLIBC_2.2.5"`} {
		if !strings.Contains(out, want) {
			t.Errorf("WriteText output lacks %s:\n%s", want, out)
		}
	}
}

// TestSummaryFlags checks that inspect shows what the builder found: a
// start-up-only patch as needing a restart, whether type layouts were
// checked, and new exported functions as an API change.
func TestSummaryFlags(t *testing.T) {
	t.Parallel()
	p := testPatch()
	p.Functions[3].Flags |= FuncExported
	s := p.Summary()
	if s.StartupOnly || s.LayoutChecked || !slices.Equal(s.NewExports, []string{"check_memo"}) || !s.Functions[3].Exported {
		t.Errorf("summary of a patch without flags: startup_only %v, layout_checked %v, new_exports %v", s.StartupOnly, s.LayoutChecked, s.NewExports)
	}
	var text bytes.Buffer
	if err := s.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"type layouts  not checked (no DWARF)", "not start-up only (takes effect in running processes)", "api change", "check_memo carried hidden"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text does not show %q:\n%s", want, text.String())
		}
	}

	p.Flags = FlagStartupOnly | FlagLayoutChecked
	s = p.Summary()
	if !s.StartupOnly || !s.LayoutChecked {
		t.Errorf("startup_only %v, layout_checked %v; want both", s.StartupOnly, s.LayoutChecked)
	}
	text.Reset()
	if err := s.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"STARTUP-ONLY", "restart needed", "checked with DWARF"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text does not show %q:\n%s", want, text.String())
		}
	}
	if strings.Contains(text.String(), "not start-up only (takes effect in running processes)") {
		t.Errorf("a start-up-only patch is shown as taking effect:\n%s", text.String())
	}
}
