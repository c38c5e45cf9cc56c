package testutil

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/patch"
)

// fakeT records what a helper reports; Fatalf ends the goroutine as
// testing.T's does.
type fakeT struct {
	testing.TB
	fatal string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls fn with a fakeT in its own goroutine and returns what it
// reported.
func run(fn func(t testing.TB)) string {
	f := &fakeT{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.fatal
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, time.Minute, func() bool { n++; return n == 5 }, "never five")
	if n != 5 {
		t.Errorf("cond called %d times, want 5 (until true)", n)
	}
}

func TestEventuallyFails(t *testing.T) {
	for _, tt := range []struct {
		msgf []any
		want string
	}{
		{nil, "waiting for condition: not within 20ms"},
		{[]any{"no answer from %d", 42}, "no answer from 42: not within 20ms"},
		{[]any{func() string { return "last seen 7" }}, "last seen 7: not within 20ms"},
	} {
		calls := 0
		got := run(func(ft testing.TB) {
			Eventually(ft, 20*time.Millisecond, func() bool { calls++; return false }, tt.msgf...)
		})
		if got != tt.want {
			t.Errorf("failure %q, want %q", got, tt.want)
		}
		if calls < 2 {
			t.Errorf("cond called %d times; it must be polled until the deadline", calls)
		}
	}
}

func TestReceive(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if v := Receive(t, ch, time.Minute); v != 7 {
		t.Errorf("Receive = %d, want 7", v)
	}
	closed := make(chan struct{})
	close(closed)
	Receive(t, closed, time.Minute, "a closed channel counts as received")
	got := run(func(ft testing.TB) { Receive(ft, make(chan int), 10*time.Millisecond, "Apply did not return") })
	if got != "Apply did not return: not within 10ms" {
		t.Errorf("failure %q", got)
	}
}

// TestSignedPatch builds, signs and loads a fixture's patch: the loaded
// patch is the signed file's, signed by the returned key, and the files
// written for a command read back the same.
func TestSignedPatch(t *testing.T) {
	key, pub, err := patch.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []patch.PrivateKey{nil, key} {
		sp, orig := FixturePatch(t, "bounds_check", builder.Options{ID: "bounds-fix", Version: 3}, k)
		if sp.Patch.ID != "bounds-fix" || sp.Patch.Version != 3 || orig.Program == "" {
			t.Errorf("patch %s v%d from %q", sp.Patch.ID, sp.Patch.Version, orig.Program)
		}
		if !bytes.Equal(sp.Patch.Signer, sp.Pub) || !bytes.Equal(sp.Key.Public(), sp.Pub) {
			t.Errorf("signer %x, public key %x", sp.Patch.Signer, sp.Pub)
		}
		if k != nil && !bytes.Equal(sp.Pub, pub) {
			t.Errorf("signed with %x, want the given key %x", sp.Pub, pub)
		}
		patchFile, keyFile := sp.WriteFiles(t, t.TempDir())
		p, err := patch.LoadFile(patchFile)
		if err != nil {
			t.Fatal(err)
		}
		rpub, err := patch.ReadPublicKey(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if p.ID != sp.Patch.ID || !bytes.Equal(rpub, sp.Pub) {
			t.Errorf("files read back as %s signed by %x", p.ID, rpub)
		}
	}
	if _, err := BuildSigned("/nonexistent/orig", "/nonexistent/fixed", builder.Options{}, nil); err == nil {
		t.Errorf("BuildSigned of missing builds succeeded")
	}
}
