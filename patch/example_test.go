package patch_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/hotpatch/hotpatch/patch"
)

// examplePatch is what the builder would return for a one-function fix.
func examplePatch() *patch.Patch {
	return &patch.Patch{
		ID:          "ledger-memo",
		Version:     1,
		CVEs:        []string{"CVE-2026-0001"},
		Severity:    patch.SeverityHigh,
		Description: "memo bounds check",
		Target: patch.Target{
			Name:    "ledger",
			BuildID: []byte{0x5e, 0x1f, 0x4b, 0x07, 0xc2, 0x9a, 0x33, 0x10},
			Arch:    patch.ArchX86_64,
			Type:    patch.PIE,
		},
		Functions: []patch.Function{{
			Name:    "check_memo",
			OldAddr: 0x1230, OldSize: 0x40,
			NewOffset: 0, NewSize: 0x48,
		}},
		Relocs: []patch.Reloc{{
			Section: patch.Text, Offset: 0x11, Type: patch.PC32, Addend: -4,
			Target: patch.RelocTarget{Kind: patch.External, Symbol: "snprintf", Version: "GLIBC_2.2.5"},
		}},
		Text: make([]byte, 0x48),
	}
}

func ExampleSign() {
	key, pub, err := patch.GenerateKey() // or patch.ReadPrivateKey("release.key")
	if err != nil {
		log.Fatal(err)
	}
	p := examplePatch()
	data, err := patch.Sign(p, key)
	if err != nil {
		log.Fatal(err)
	}
	// data is what goes into ledger-memo.hpatch.
	fmt.Println(strings.SplitN(string(data), ",", 2)[0])
	fmt.Println("signed by the key:", p.Signer.Equal(pub))
	// Output:
	// {"payloadType":"application/vnd.hotpatch.patch.v1"
	// signed by the key: true
}

func ExampleLoad() {
	key, pub, err := patch.GenerateKey()
	if err != nil {
		log.Fatal(err)
	}
	data, err := patch.Sign(examplePatch(), key)
	if err != nil {
		log.Fatal(err)
	}

	// On the host: load (well formed, signed by the key it carries) ...
	p, err := patch.Load(data)
	if err != nil {
		log.Fatal(err)
	}
	// ... then decide whether that key is trusted here.
	trusted := []patch.PublicKey{pub} // e.g. patch.ReadPublicKey("release.pub")
	if err := patch.Verify(p, trusted); err != nil {
		log.Fatal(err)
	}
	fmt.Println("ok:", p.ID, "for", p.Target.Name, "fixes", p.CVEs)

	_, stranger, _ := patch.GenerateKey()
	var untrusted *patch.UntrustedSignerError
	fmt.Println("untrusted elsewhere:", errors.As(patch.Verify(p, []patch.PublicKey{stranger}), &untrusted))

	// Any change to the file breaks the signature.
	data[len(data)/2] ^= 1
	_, err = patch.Load(data)
	fmt.Println("tampered:", errors.Is(err, patch.ErrSignature) || errors.Is(err, patch.ErrFormat))
	// Output:
	// ok: ledger-memo for ledger fixes [CVE-2026-0001]
	// untrusted elsewhere: true
	// tampered: true
}

func ExampleSummary_WriteText() {
	p := examplePatch() // normally from patch.LoadFile
	if err := p.Summary().WriteText(os.Stdout); err != nil {
		log.Fatal(err)
	}
	// Output:
	// patch         ledger-memo (level 1)
	// cves          CVE-2026-0001
	// severity      high
	// signer        not signed
	// target        ledger (x86_64, pie)
	// build-id      5e1f4b07c29a3310
	// description   memo bounds check
	// effect        not start-up only (takes effect in running processes)
	// type layouts  not checked (no DWARF)
	//
	// functions: 1 (1 replaced, 0 new, 0 cold parts)
	//   KIND      NAME        FILE  OLD ADDR  OLD SIZE  NEW SIZE  OLD SHA-256
	//   replaced  check_memo  -     0x1230    64        72        0000000000000000000000000000000000000000000000000000000000000000
	//
	// objects: 0
	//
	// sizes             text 72, rodata 0, data 0, bss 0 bytes
	// relocations       1 (0 in patch, 0 in module, 1 external)
	// external symbols  snprintf@GLIBC_2.2.5
}
