package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// Signed is a patch built from two builds, signed and loaded back, as a
// user's patch reaches the engine, the agent or the server.
type Signed struct {
	Patch *patch.Patch     // the patch as loaded from File
	File  []byte           // the signed patch file
	Key   patch.PrivateKey // the key it is signed with
	Pub   patch.PublicKey  // its public half, to trust
}

// BuildSigned builds the patch between orig and fixed (the two builds of
// a module), signs it with key (a new key if key is nil) and loads it
// back. For code that cannot fail a test (a sync.Once); tests call
// SignedPatch.
func BuildSigned(orig, fixed string, opts builder.Options, key patch.PrivateKey) (*Signed, error) {
	unsigned, err := builder.Build(orig, fixed, opts)
	if err != nil {
		return nil, err
	}
	return SignLoad(unsigned, key)
}

// SignLoad signs a built patch with key (a new key if key is nil) and loads
// it back, for patches built otherwise than from two builds (the stock
// path, say).
func SignLoad(unsigned *patch.Patch, key patch.PrivateKey) (*Signed, error) {
	var err error
	if key == nil {
		if key, _, err = patch.GenerateKey(); err != nil {
			return nil, err
		}
	}
	data, err := patch.Sign(unsigned, key)
	if err != nil {
		return nil, err
	}
	p, err := patch.Load(data)
	if err != nil {
		return nil, err
	}
	return &Signed{Patch: p, File: data, Key: key, Pub: key.Public()}, nil
}

// SignedPatch is BuildSigned that fails the test on an error.
func SignedPatch(t testing.TB, orig, fixed string, opts builder.Options, key patch.PrivateKey) *Signed {
	t.Helper()
	p, err := BuildSigned(orig, fixed, opts, key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FixturePatch builds both variants of fixture name with its default
// flags and returns the signed patch between them (see SignedPatch) and
// the original build, to start.
func FixturePatch(t testing.TB, name string, opts builder.Options, key patch.PrivateKey) (*Signed, *fixture.Build) {
	t.Helper()
	fx, err := fixture.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	return FixtureFlagsPatch(t, fx, fx.DefaultFlags(), opts, key)
}

// FixtureFlagsPatch is FixturePatch for a loaded fixture built with flags.
func FixtureFlagsPatch(t testing.TB, fx *fixture.Fixture, fl fixture.Flags, opts builder.Options, key patch.PrivateKey) (*Signed, *fixture.Build) {
	t.Helper()
	orig, err := fx.Build(fixture.Orig, fl)
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := fx.Build(fixture.Fixed, fl)
	if err != nil {
		t.Fatal(err)
	}
	return SignedPatch(t, orig.Target, fixed.Target, opts, key), orig
}

// WriteFiles writes the patch file and its public key (PEM) into dir and
// returns their paths, for a command (hotpatch, hotpatchd) to read.
func (s *Signed) WriteFiles(t testing.TB, dir string) (patchFile, keyFile string) {
	t.Helper()
	pem, err := patch.MarshalPublicKey(s.Pub)
	if err != nil {
		t.Fatal(err)
	}
	patchFile = filepath.Join(dir, s.Patch.ID+".hotpatch")
	keyFile = filepath.Join(dir, s.Patch.ID+".pub")
	if err := os.WriteFile(patchFile, s.File, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return patchFile, keyFile
}
