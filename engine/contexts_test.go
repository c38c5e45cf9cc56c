package engine

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// coroTarget starts testdata/fixtures/coro_revert with its coroutine
// suspended inside step(), and returns it with the patch of step().
func coroTarget(t *testing.T) (*fixture.Proc, *patch.Patch, patch.PublicKey) {
	t.Helper()
	orig, fixed, err := fixture.CompilePair("coro_revert", filepath.Join(fixture.Root(), "testdata", "fixtures", "coro_revert"), "coro.c")
	if err != nil {
		t.Fatal(err)
	}
	p, pub := signedPatchFrom(t, orig, fixed, builder.Options{ID: "coro-fix"})
	proc := fixture.Start(t, orig)
	if got := probe(t, proc, "step"); got != "step v1 0" {
		t.Fatalf("first step: %q", got)
	}
	return proc, p, pub
}

// TestUserContextsRefused: a process that switches user-level contexts
// (it imports swapcontext) is refused by name, and left as it was.
func TestUserContextsRefused(t *testing.T) {
	proc, p, pub := coroTarget(t)
	pid := proc.Pid()
	before := moduleText(t, pid, p)
	_, err := Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}})
	var ue *UserContextError
	if !errors.As(err, &ue) || !strings.Contains(ue.Reason, "context") || !strings.Contains(err.Error(), "--allow-user-contexts") {
		t.Fatalf("Apply: %v; want a *UserContextError naming the context switch and the way out", err)
	}
	if !bytes.Equal(moduleText(t, pid, p), before) {
		t.Errorf("the refused apply changed the code")
	}
	if n := patchMappings(t, pid); n != 0 {
		t.Errorf("%d patch mappings after the refusal", n)
	}
	if got := probe(t, proc, "step"); got != "step v1 1" {
		t.Errorf("after the refusal: %q", got)
	}
}

// TestUserContextsAllowed: told that the user accepts it, Apply patches a
// process with a coroutine suspended in the replaced function; the
// coroutine then runs the new code. Revert cannot see the coroutine now
// suspended in the patch's code, so it keeps that code mapped: the
// coroutine returns through it and runs the original again, and the
// process lives. The kept code is not a patch the process carries.
func TestUserContextsAllowed(t *testing.T) {
	proc, p, pub := coroTarget(t)
	pid := proc.Pid()
	opts := Options{Trusted: []patch.PublicKey{pub}, AllowUserContexts: true}
	if _, err := Apply(pid, p, opts); err != nil {
		t.Fatal(err)
	}
	// The coroutine leaves the old step (it was suspended there) and
	// enters the new one, where it suspends itself again.
	if got := probe(t, proc, "step"); got != "step v2 1" {
		t.Fatalf("after the apply: %q", got)
	}
	res, err := Revert(pid, p.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !res.KeptMapped {
		t.Errorf("Revert result %+v; want the patch code kept mapped", res)
	}
	if n := patchMappings(t, pid); n != 1 {
		t.Errorf("%d patch mappings after the revert; want the code kept", n)
	}
	if st, err := Status(pid); err != nil || len(st) != 0 {
		t.Errorf("Status after the revert = %+v, %v; want none", st, err)
	}
	if pids, err := FindProcesses(nil, p.ID); err != nil || len(pids) != 0 {
		t.Errorf("FindProcesses(%s) = %v, %v; the kept code is not a patch carried", p.ID, pids, err)
	}
	// The coroutine resumes in the kept patch code and returns from it.
	if got := probe(t, proc, "step"); got != "step v1 2" {
		t.Errorf("after the revert: %q", got)
	}
	if got := probe(t, proc, "resumed"); got != "resumed 2" {
		t.Errorf("%q; want the coroutine to have gone on twice", got)
	}
	// Applied and reverted again: one more mapping, kept as well.
	if _, err := Apply(pid, p, opts); err != nil {
		t.Fatalf("Apply after the revert: %v", err)
	}
	if got := probe(t, proc, "step"); got != "step v2 3" {
		t.Errorf("applied again: %q", got)
	}
	if _, err := Revert(pid, p.ID, 0); err != nil {
		t.Fatal(err)
	}
	if got := probe(t, proc, "step"); got != "step v1 4" {
		t.Errorf("reverted again: %q", got)
	}
}

// TestUserContextsStatic: a static executable carries its own makecontext
// and swapcontext (the first found in its symbol table is named);
// it is seen as switching user-level contexts too, and a program that
// does not (the busy fixture) is not.
func TestUserContextsStatic(t *testing.T) {
	bin, err := fixture.Compile("coro_revert-static", []string{filepath.Join(fixture.Root(), "testdata", "fixtures", "coro_revert", "orig", "coro.c")}, "-O2", "-static")
	if err != nil {
		t.Fatal(err)
	}
	proc := fixture.Start(t, bin)
	if got := probe(t, proc, "step"); got != "step v1 0" {
		t.Fatalf("first step: %q", got)
	}
	busy, _, _ := busyTarget(t)
	for _, tc := range []struct {
		pid  int
		want string
	}{{proc.Pid(), "uses makecontext"}, {busy.Pid(), ""}} {
		tg, err := openTarget(tc.pid)
		if err != nil {
			t.Fatal(err)
		}
		_, why := tg.userContexts()
		tg.close()
		if why != tc.want {
			t.Errorf("process %d: userContexts says %q, want %q", tc.pid, why, tc.want)
		}
	}
}

// TestUserContextsOpenSSL: libcrypto imports makecontext and swapcontext
// for its ASYNC jobs, and every program that speaks TLS maps it (and libssl,
// which imports ASYNC_start_job). That is no sign of coroutines unless
// some module can suspend a job: it imports ASYNC_pause_job.
func TestUserContextsOpenSSL(t *testing.T) {
	const crypto = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
	if _, err := os.Stat(crypto); err != nil {
		t.Skip("OpenSSL's libcrypto.so.3 is not installed")
	}
	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"plain", nil, ""},
		{"async", []string{"-DUSE_ASYNC"}, "uses "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, err := fixture.Compile("openssl-"+tc.name, []string{"testdata/openssl/main.c"}, append([]string{"-O2", "-Wl,--no-as-needed", "-l:libssl.so.3", "-l:libcrypto.so.3"}, tc.flags...)...)
			if err != nil {
				t.Fatal(err)
			}
			proc := fixture.Start(t, bin)
			if got := probe(t, proc, "x"); !strings.HasPrefix(got, "openssl 3 x") {
				t.Fatalf("probe: %q", got)
			}
			tg, err := openTarget(proc.Pid())
			if err != nil {
				t.Fatal(err)
			}
			defer tg.close()
			mod, why := tg.userContexts()
			if tc.want == "" && why != "" || tc.want != "" && (!strings.HasPrefix(why, tc.want) || !strings.Contains(mod, "libcrypto")) {
				t.Errorf("userContexts = %q, %q; want %q", mod, why, tc.want)
			}
		})
	}
}
