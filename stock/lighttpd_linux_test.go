package stock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
)

// Debian 12's lighttpd 1.4.69-1 (the main archive's, built in February
// 2023) does not rebuild byte-for-byte today: its .data.rel.ro is 16 bytes
// shorter than the rebuild's, which moves the GOT and everything the code
// reaches through it (docs/stock-binaries.md). It is the case for the
// per-function fallback. The fix is upstream's commit d71fc70c (lighttpd
// 1.4.72, redmine #3219), request smuggling hardening: an empty
// Content-Length header is rejected with 400 instead of ignored.
const (
	lighttpdBin       = "/usr/sbin/lighttpd"
	lighttpdInstalled = "1.4.69-1"
)

var lighttpdCase = stockCase{
	binary: lighttpdBin, installed: lighttpdInstalled, sourceVersion: lighttpdInstalled,
	install: "make stock-demo installs it", codeAlone: true,
}

// TestStockNotReproducibleLive patches Debian's own lighttpd, which its
// source no longer rebuilds byte-for-byte: Prepare says so and why, the
// patch is retargeted by the per-function proof (request.c, where the fix
// is, proven the same code in the installed binary, with no debug symbols:
// Debian's -dbgsym archive is not reachable here), and applied to the
// running server while clients keep it busy: the empty Content-Length is
// refused after the patch, no request fails, revert brings the old answer.
func TestStockNotReproducibleLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	prep := lighttpdCase.prepare(t, ctx)
	if prep.Different == nil {
		t.Fatalf("the rebuild of lighttpd %s is byte-identical now; this test is about the fallback for one that is not", lighttpdInstalled)
	}
	if !strings.Contains(prep.Different.Cause, ".data.rel.ro") {
		t.Errorf("the reason given, %q, does not name the section that grew", prep.Different.Cause)
	}
	fix := []string{"testdata/lighttpd/reject-empty-content-length.patch"}
	// Without debug symbols, the weaker proof by code alone must be asked
	// for; it is not taken silently.
	strict := lighttpdCase
	strict.codeAlone = false
	sprep := strict.prepare(t, ctx)
	fixed, err := sprep.Fixed(ctx, fix)
	if err != nil {
		t.Fatalf("Fixed: %v", err)
	}
	var sn *builder.SymbolsNeededError
	if _, err := sprep.Patch(fixed, builder.Options{ID: "lighttpd-empty-content-length"}); !errors.As(err, &sn) {
		t.Fatalf("Patch without debug symbols and without CodeAlone = %v, want a SymbolsNeededError", err)
	}
	p, pub := signedPatch(t, ctx, prep, fix, builder.Options{ID: "lighttpd-empty-content-length"})
	rp := prep.Retargeted
	if rp == nil || len(rp.Units) != 1 || !strings.HasSuffix(rp.Units[0], "request.c") || !rp.AllCode {
		t.Fatalf("retarget proof %+v: want request.c proven, and all of lighttpd's code", rp)
	}
	t.Logf("proof: %s proven (%d functions), %d of %d functions of lighttpd proven, %d references moved, %d in place",
		rp.Units[0], rp.Functions, rp.Proven, rp.Total, rp.Moved, rp.Same)
	installedID, err := fixture.BuildID(lighttpdBin)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%x", p.Target.BuildID) != fmt.Sprintf("%x", installedID) {
		t.Fatalf("patch targets build-id %x, the installed lighttpd has %x", p.Target.BuildID, installedID)
	}

	srv := startLighttpd(t)
	load := srv.startLoad()
	load.waitFor(t, 200)
	if got := srv.emptyContentLength(t); got != 200 {
		t.Fatalf("before the patch: a request with an empty Content-Length got %d, want 200 (ignored)", got)
	}
	res, err := engine.Apply(srv.proc.Pid(), p, engine.Options{Trusted: []patch.PublicKey{pub}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("Apply to the running lighttpd: %v", err)
	}
	t.Logf("applied: %d function(s), paused %v", res.Functions, res.Paused)
	load.waitFor(t, load.count()+200)
	if got := srv.emptyContentLength(t); got != 400 {
		t.Errorf("after the patch: empty Content-Length got %d, want 400", got)
	}
	if _, err := engine.Revert(srv.proc.Pid(), p.ID, 10*time.Second); err != nil {
		t.Fatalf("Revert: %v", err)
	}
	if got := srv.emptyContentLength(t); got != 200 {
		t.Errorf("after revert: empty Content-Length got %d, want 200 again", got)
	}
	load.waitFor(t, load.count()+200)
	n, failed := load.finish()
	if failed != nil {
		t.Errorf("a request failed while lighttpd was patched and reverted: %v", failed)
	}
	t.Logf("%d requests answered by lighttpd during the test, none failed", n)
}

type lighttpd struct {
	proc *fixture.Proc
	addr string
}

func startLighttpd(t *testing.T) *lighttpd {
	t.Helper()
	port := freePort(t)
	dir := t.TempDir()
	www := filepath.Join(dir, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("hello from stock lighttpd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "lighttpd.conf")
	cfg := fmt.Sprintf("server.document-root = %q\nserver.bind = \"127.0.0.1\"\nserver.port = %d\nserver.modules = ()\nserver.errorlog = %q\nindex-file.names = (\"index.html\")\n",
		www, port, filepath.Join(dir, "error.log"))
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &lighttpd{proc: fixture.StartArgs(t, []string{lighttpdBin, "-D", "-f", conf}), addr: fmt.Sprintf("127.0.0.1:%d", port)}
	waitListening(t, "lighttpd", s.proc, s.addr)
	return s
}

// emptyContentLength sends a GET with an empty Content-Length header and
// returns the status code of the answer.
func (s *lighttpd) emptyContentLength(t *testing.T) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /index.html HTTP/1.1\r\nHost: test\r\nContent-Length: \r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading lighttpd's answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// httpLoad keeps lighttpd busy: two clients with keep-alive connections
// fetch a page in a loop; every answer must be 200 with the page.
type httpLoad struct {
	n      atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	failed error
	once   sync.Once
}

func (s *lighttpd) startLoad() *httpLoad {
	l := &httpLoad{stop: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	for range 2 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := client.Get("http://" + s.addr + "/index.html")
				if err == nil {
					body, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case rerr != nil:
						err = rerr
					case resp.StatusCode != 200 || string(body) != "hello from stock lighttpd\n":
						err = fmt.Errorf("GET -> %d %q", resp.StatusCode, body)
					}
				}
				if err != nil {
					l.mu.Lock()
					if l.failed == nil {
						l.failed = err
					}
					l.mu.Unlock()
					return
				}
				l.n.Add(1)
			}
		}()
	}
	return l
}

func (l *httpLoad) count() int { return int(l.n.Load()) }

// waitFor waits until n requests were answered, or one failed.
func (l *httpLoad) waitFor(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, time.Minute, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.failed != nil || l.count() >= n
	}, func() string { return fmt.Sprintf("%d of %d requests answered", l.count(), n) })
}

func (l *httpLoad) finish() (int, error) {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count(), l.failed
}
