package stock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
)

// The stock library of this test: Debian 12's libexpat1 2.5.0-1+deb12u1,
// as installed on a fresh machine of this kind. The archive no longer has
// that version's source, so the test fetches 2.5.0-1+deb12u2 and leaves out
// the three patches that version added; the proof shows the result is the
// installed file. The fix is Debian's own backport of the upstream fix for
// CVE-2024-50602 from 2.5.0-1+deb12u2.
const (
	expatLib           = "/lib/x86_64-linux-gnu/libexpat.so.1"
	expatInstalled     = "2.5.0-1+deb12u1"
	expatSourceVersion = "2.5.0-1+deb12u2"
)

var expatDrops = []string{
	"expat-2.5.0-CVE-2023-52425.patch",
	"expat-2.5.0-CVE-2024-50602.patch",
	"expat-2.5.0-CVE-2024-8176.patch",
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// stockCase is an installed Debian binary and how to rebuild it.
type stockCase struct {
	binary, installed, sourceVersion string
	drops                            []string
	// install says how to get the installed version when it is missing.
	install string
	// codeAlone: retarget without debug symbols (Options.CodeAlone).
	codeAlone bool
	// buildRoot: build in this build root instead of on the host.
	buildRoot string
}

var expatCase = stockCase{
	binary: expatLib, installed: expatInstalled, sourceVersion: expatSourceVersion, drops: expatDrops,
	install: "Debian 12 as shipped has it",
}

// prepare rebuilds and proves the installed binary, or skips the test
// when this machine cannot: not root, no dpkg-dev, another version
// installed, or an archive that no longer serves the source version.
func (c stockCase) prepare(t *testing.T, ctx context.Context) *Prepared {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: apt-get build-dep and ptrace")
	}
	if _, err := exec.LookPath("dpkg-source"); err != nil {
		t.Skip("dpkg-dev is not installed")
	}
	pkg, err := Identify(ctx, c.binary)
	if err != nil {
		t.Skipf("%s is not installed from a package here: %v", c.binary, err)
	}
	if pkg.Version != c.installed {
		t.Skipf("this test is written for %s %s (%s); %s is installed", pkg.Name, c.installed, c.install, pkg.Version)
	}
	prep, err := Prepare(ctx, Options{Binary: c.binary, SourceVersion: c.sourceVersion, DropPatches: c.drops, CodeAlone: c.codeAlone, BuildRoot: c.buildRoot, Log: logWriter{t}})
	var fe *FetchError
	if errors.As(err, &fe) {
		t.Skipf("the archive does not serve the source: %v", err)
	}
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return prep
}

// signedPatch builds the patch for fixes, signs it with a new key and
// loads it back, as an agent would.
func signedPatch(t *testing.T, ctx context.Context, prep *Prepared, fixes []string, opts builder.Options) (*patch.Patch, patch.PublicKey) {
	t.Helper()
	fixed, err := prep.Fixed(ctx, fixes)
	if err != nil {
		t.Fatalf("Fixed: %v", err)
	}
	unsigned, err := prep.Patch(fixed, opts)
	if err != nil {
		t.Fatalf("Patch: %v", err)
	}
	sp, err := testutil.SignLoad(unsigned, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, pub, data := sp.Patch, sp.Pub, sp.File
	t.Logf("patch %s: %d bytes, %d function(s)", p.ID, len(data), len(p.Functions))
	return p, pub
}

// TestStockLibraryLive is the whole stock path on a real package: the
// installed libexpat is rebuilt from its source package and proven
// identical, Debian's fix for CVE-2024-50602 is built the same way, and
// the patch, made for the installed file's build-id, is applied to a
// service that uses the system's libexpat while it serves requests;
// the vulnerable behaviour goes, no request fails, and revert brings it
// back.
func TestStockLibraryLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	prep := expatCase.prepare(t, ctx)
	p, pub := signedPatch(t, ctx, prep, []string{"testdata/expat/CVE-2024-50602.patch"}, builder.Options{ID: "expat-CVE-2024-50602", CVEs: []string{"CVE-2024-50602"}})
	installedID, err := fixture.BuildID(prep.Package.File)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%x", p.Target.BuildID) != fmt.Sprintf("%x", installedID) {
		t.Fatalf("patch targets build-id %x, the installed file has %x", p.Target.BuildID, installedID)
	}
	replaced := map[string]bool{}
	for _, f := range p.Functions {
		replaced[f.Name] = true
	}
	if !replaced["XML_StopParser"] {
		t.Fatalf("the patch does not replace XML_StopParser (it replaces %v)", replaced)
	}
	// The fix changes XML_StopParser and XML_ErrorString; the lines it adds
	// shift the __LINE__ that a dozen functions pass to expat's accounting,
	// which the builder leaves out (builder/linetable.go).
	if len(p.Functions) > 4 {
		t.Errorf("the patch replaces %d functions (%v), want at most 4: functions that differ only in a line number are carried", len(p.Functions), replaced)
	}

	svc := filepath.Join(t.TempDir(), "xmlsvc")
	if out, err := exec.Command("gcc", "-O2", "-o", svc, "testdata/expat/xmlsvc.c", "-lexpat").CombinedOutput(); err != nil {
		t.Fatalf("gcc xmlsvc: %v\n%s", err, out)
	}
	proc := fixture.Start(t, svc)
	load := startLoad(t, proc)
	load.waitFor(t, 200)

	if got := load.ask("stop"); !strings.HasSuffix(got, "stop status=1 error=0") {
		t.Fatalf("before the patch: stop -> %q, want the vulnerable answer status=1 error=0", got)
	}
	res, err := engine.Apply(proc.Pid(), p, engine.Options{Trusted: []patch.PublicKey{pub}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("Apply to the service on the stock libexpat: %v", err)
	}
	t.Logf("applied: %d functions, paused %v", res.Functions, res.Paused)
	load.waitFor(t, load.count()+200)
	if got := load.ask("stop"); !strings.HasSuffix(got, "stop status=0 error=44") {
		t.Errorf("after the patch: stop -> %q, want status=0 error=44 (XML_ERROR_NOT_STARTED)", got)
	}
	if _, err := engine.Revert(proc.Pid(), p.ID, 10*time.Second); err != nil {
		t.Fatalf("Revert: %v", err)
	}
	if got := load.ask("stop"); !strings.HasSuffix(got, "stop status=1 error=0") {
		t.Errorf("after revert: stop -> %q, want the original answer again", got)
	}
	load.waitFor(t, load.count()+200)
	n, failed := load.finish()
	if failed != nil {
		t.Errorf("a request failed while the library was patched and reverted: %v", failed)
	}
	if n < 600 {
		t.Errorf("only %d parse requests ran during the test; the load did not run", n)
	}
	t.Logf("%d parse requests answered, none failed", n)
}

// load keeps a service busy with parse requests from one goroutine (a
// fixture.Proc is probed from one goroutine at a time) and lets the test
// slip its own requests in between.
type load struct {
	proc   *fixture.Proc
	asks   chan string
	answer chan string
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	n      int
	failed error
}

func startLoad(t *testing.T, proc *fixture.Proc) *load {
	l := &load{proc: proc, asks: make(chan string), answer: make(chan string), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	t.Cleanup(func() { l.finish() })
	return l
}

func (l *load) run() {
	defer close(l.done)
	for {
		select {
		case <-l.stop:
			return
		case q := <-l.asks:
			l.answer <- l.probe(q)
			continue
		default:
		}
		reply, err := l.proc.Probe("parse <doc><a/><b x='1'/><c>text</c></doc>")
		l.mu.Lock()
		switch {
		case err != nil:
			l.failed = err
		case !strings.HasSuffix(reply, " ok elements=4"):
			l.failed = fmt.Errorf("parse -> %q, want elements=4", reply)
		default:
			l.n++
		}
		failed := l.failed != nil
		l.mu.Unlock()
		if failed {
			// Keep answering the test's own requests.
			select {
			case <-l.stop:
				return
			case q := <-l.asks:
				l.answer <- l.probe(q)
			}
		}
	}
}

// probe sends the test's own request; a failure is its reply.
func (l *load) probe(q string) string {
	reply, err := l.proc.Probe(q)
	if err != nil {
		return "error: " + err.Error()
	}
	return reply
}

// count is the number of parse requests answered so far.
func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// waitFor waits until n parse requests were answered (or one failed).
func (l *load) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		done := l.n >= n || l.failed != nil
		l.mu.Unlock()
		if done {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("only %d of %d parse requests answered within a minute", l.count(), n)
}

// ask sends one request between two parse requests and returns the reply.
func (l *load) ask(q string) string {
	select {
	case l.asks <- q:
		return <-l.answer
	case <-l.done:
		return "error: the load has stopped"
	}
}

// finish stops the load and returns how many parse requests were answered
// and the first failure.
func (l *load) finish() (int, error) {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.failed
}

// TestStockBuildRoot: the same rebuild made in a clean build root (a
// minimal Debian of the host's release made with debootstrap, with only
// the package's build dependencies added) instead of on the host is the
// installed libexpat byte for byte too, and the patch built there for
// Debian's CVE-2024-50602 fix is the host-built one. The root is kept in
// the user's cache directory and reused by later runs.
func TestStockBuildRoot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("debootstrap is not installed (make test installs it)")
	}
	codename, err := hostCodename()
	if err != nil {
		t.Skip(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Skip(err)
	}
	c := expatCase
	c.buildRoot = filepath.Join(cache, "hotpatch", "build-root-"+codename)
	prep := c.prepare(t, ctx)
	if prep.Proof == nil {
		t.Fatalf("the build root's rebuild is not the installed file: %v", prep.Different)
	}
	if !strings.HasPrefix(prep.Original, c.buildRoot+"/") {
		t.Fatalf("the rebuild %s is not inside the build root %s", prep.Original, c.buildRoot)
	}
	fix := []string{"testdata/expat/CVE-2024-50602.patch"}
	opts := builder.Options{ID: "expat-CVE-2024-50602", CVEs: []string{"CVE-2024-50602"}}
	inRoot, _ := signedPatch(t, ctx, prep, fix, opts)
	onHost, _ := signedPatch(t, ctx, expatCase.prepare(t, ctx), fix, opts)
	if !bytes.Equal(inRoot.Text, onHost.Text) || len(inRoot.Functions) != len(onHost.Functions) || len(inRoot.Relocs) != len(onHost.Relocs) {
		t.Errorf("the patch built in the build root (%d functions, %d bytes of code) is not the host-built one (%d, %d)",
			len(inRoot.Functions), len(inRoot.Text), len(onHost.Functions), len(onHost.Text))
	}
	for i := range inRoot.Functions {
		if i < len(onHost.Functions) && inRoot.Functions[i] != onHost.Functions[i] {
			t.Errorf("function %d: %+v in the build root, %+v on the host", i, inRoot.Functions[i], onHost.Functions[i])
		}
	}
}

// TestStockFixedTree: the fix given as a fixed source tree (the package's
// source as dpkg-source unpacks it, with the fix made in it) gives the
// same patch as the fix given as a patch file; an unfixed tree and a
// built one are refused, each saying why.
func TestStockFixedTree(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	prep := expatCase.prepare(t, ctx)
	unpack := func() string {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "expat")
		if out, err := exec.Command("dpkg-source", "--no-check", "-x", "--skip-patches", prep.dsc, dir).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-source -x: %v\n%s", err, out)
		}
		if err := prep.applySeries(ctx, dir, expatCase.drops); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	fixedTree := unpack()
	fix, err := filepath.Abs("testdata/expat/CVE-2024-50602.patch")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("patch", "-d", fixedTree, "-p1", "--batch", "-i", fix).CombinedOutput(); err != nil {
		t.Fatalf("patch: %v\n%s", err, out)
	}
	opts := builder.Options{ID: "expat-CVE-2024-50602"}
	fromTree, _ := signedPatch(t, ctx, prep, []string{fixedTree}, opts)
	fromFile, _ := signedPatch(t, ctx, prep, []string{"testdata/expat/CVE-2024-50602.patch"}, opts)
	if !bytes.Equal(fromTree.Text, fromFile.Text) || len(fromTree.Functions) != len(fromFile.Functions) {
		t.Errorf("the patch from the fixed tree (%d functions) is not the one from the patch file (%d)", len(fromTree.Functions), len(fromFile.Functions))
	}

	if _, err := prep.Fixed(ctx, []string{unpack()}); err == nil || !strings.Contains(err.Error(), "holds no fix") {
		t.Errorf("Fixed(an unfixed tree) = %v, want it refused", err)
	}
	built := unpack()
	if err := os.WriteFile(filepath.Join(built, "expat", "lib", "xmlparse.o"), []byte("\x7fELF\x00\x01\x02"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := prep.Fixed(ctx, []string{built}); err == nil || !strings.Contains(err.Error(), "binary files") {
		t.Errorf("Fixed(a built tree) = %v, want it refused", err)
	}
}
