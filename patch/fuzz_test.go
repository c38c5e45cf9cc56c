package patch

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the named seed files under testdata/fuzz/")

// corpusSeeds returns the named seeds of each fuzz target. They are also
// kept under testdata/fuzz so that "go test" runs them and "go test -fuzz"
// starts from them; crashers found by the fuzzer go there too, under their
// hash names, and are kept.
func corpusSeeds(t testing.TB) map[string]map[string][]byte {
	t.Helper()
	_, file := signedTestFile(t)
	_, payload := signedTestPayload(t)
	key, pub := testKey("release")

	minimal := &Patch{ID: "x", Target: Target{Name: "a", BuildID: []byte{1}, Arch: ArchX86_64, Type: Executable},
		Functions: []Function{{Name: "f", OldAddr: 0x1000, OldSize: 5, NewSize: 1}}, Text: []byte{0xc3}, Signer: pub}
	minimalPayload, err := encodePayload(minimal)
	if err != nil {
		t.Fatal(err)
	}
	minimalFile := signRaw(t, minimalPayload, key, pub)

	flagged := testPatch()
	flagged.Signer = pub
	flagged.Flags = FlagStartupOnly | FlagLayoutChecked
	flagged.Functions[3].Flags |= FuncExported
	flaggedPayload, err := encodePayload(flagged)
	if err != nil {
		t.Fatal(err)
	}

	flipped := bytes.Clone(file)
	flipped[len(flipped)/2] ^= 1
	truncated := payload[:len(payload)/2]

	return map[string]map[string][]byte{
		"FuzzLoad": {
			"seed-valid":           file,
			"seed-minimal":         minimalFile,
			"seed-flipped":         flipped,
			"seed-signed-garbage":  signRaw(t, []byte("HPATCH\x00\x01\x00"), key, pub),
			"seed-two-signatures":  bytes.Replace(file, []byte(`[{"keyid"`), []byte(`[{"keyid":"","sig":""},{"keyid"`), 1),
			"seed-empty-envelope":  []byte(`{"payloadType":"","payload":"","signatures":null}` + "\n"),
			"seed-payload-newline": bytes.Replace(file, []byte(`"payload":"`), []byte(`"payload":"\n`), 1),
		},
		"FuzzDecodePayload": {
			"seed-valid":     payload,
			"seed-minimal":   minimalPayload,
			"seed-flags-v3":  flaggedPayload,
			"seed-truncated": truncated,
			"seed-header":    []byte("HPATCH\x00\x01\x00"),
		},
	}
}

// TestFuzzCorpusCurrent checks that the named seed files match what the
// code writes today (a drift test), or rewrites them with -update-corpus.
func TestFuzzCorpusCurrent(t *testing.T) {
	for target, seeds := range corpusSeeds(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, data := range seeds {
			path := filepath.Join(dir, name)
			want := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale; run go test ./patch -run TestFuzzCorpusCurrent -update-corpus", path)
			}
		}
	}
}

func FuzzLoad(f *testing.F) {
	for _, seed := range corpusSeeds(f)["FuzzLoad"] {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Load(data)
		if err != nil {
			if p != nil {
				t.Fatalf("Load returned a patch and an error %v", err)
			}
			checkLoadError(t, err)
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Load accepted a patch that does not validate: %v", err)
		}
		payload, err := encodePayload(p)
		if err != nil {
			t.Fatalf("Load accepted a patch that does not encode: %v", err)
		}
		var env envelope
		if err := jsonUnmarshal(data, &env); err != nil {
			t.Fatal(err)
		}
		if env.Payload != base64.StdEncoding.EncodeToString(payload) {
			t.Fatal("the loaded patch encodes to another payload than the file's")
		}
	})
}

func FuzzDecodePayload(f *testing.F) {
	for _, seed := range corpusSeeds(f)["FuzzDecodePayload"] {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodePayload(data)
		if err != nil {
			if p != nil {
				t.Fatalf("decodePayload returned a patch and an error %v", err)
			}
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %q does not wrap ErrFormat", err)
			}
			checkLoadError(t, err)
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("decodePayload accepted a patch that does not validate: %v", err)
		}
		again, err := encodePayload(p)
		if err != nil {
			t.Fatalf("decodePayload accepted a patch that does not encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatal("decoded patch encodes to other bytes")
		}
		// Whatever decodes must also survive the rest of the pipeline.
		var b bytes.Buffer
		if err := p.Summary().WriteText(&b); err != nil {
			t.Fatal(err)
		}
	})
}
