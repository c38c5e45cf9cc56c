// Package browser runs a real headless Chromium for the dashboard's
// end-to-end tests, driven over the DevTools protocol by chromedp. It
// finds Debian's chromium (scripts/test.sh installs it), trusts one
// server key and nothing else, records what the page's scripts throw or
// log as errors (a Content-Security-Policy refusal among them), and keeps
// screenshots as test artifacts.
package browser

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Find returns the path of a Chromium: $HOTPATCH_CHROMIUM, or the first
// of chromium, chromium-browser, google-chrome on $PATH.
func Find() (string, error) {
	if p := os.Getenv("HOTPATCH_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no Chromium found (install Debian's chromium package, or set HOTPATCH_CHROMIUM)")
}

// Browser is one headless Chromium of a test.
type Browser struct {
	t      testing.TB
	root   context.Context
	mu     sync.Mutex
	errors []string
}

// Options configure a Browser.
type Options struct {
	// TrustSPKI are base64 SHA-256 hashes of public keys whose
	// certificates Chromium accepts although no CA it knows signed them
	// (the test server's own CA); everything else is checked as usual.
	TrustSPKI []string
	// Width and Height of the window (default 1366×900, a laptop).
	Width, Height int
}

// New starts Chromium for a test. Without a Chromium the test is skipped,
// or fails when HOTPATCH_REQUIRE_BROWSER=1 (the test script sets it, so
// CI cannot pass by skipping).
func New(t testing.TB, opts Options) *Browser {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the browser tests run on Linux")
	}
	exe, err := Find()
	if err != nil {
		if os.Getenv("HOTPATCH_REQUIRE_BROWSER") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if opts.Width == 0 {
		opts.Width, opts.Height = 1366, 900
	}
	// The flags Debian's Chromium needs headless, as root, on a machine
	// with no way out: without the background-networking ones it keeps
	// dialling Google's hosts.
	flags := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(opts.Width, opts.Height),
		chromedp.NoSandbox,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider"),
		chromedp.Flag("lang", "en-US"),
	)
	if len(opts.TrustSPKI) > 0 {
		flags = append(flags, chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(opts.TrustSPKI, ",")))
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), flags...)
	t.Cleanup(cancel)
	// The first context starts the browser (with no timeout: it would
	// stop the browser); the tabs are made in new browser contexts of it.
	root, cancelRoot := chromedp.NewContext(alloc)
	t.Cleanup(cancelRoot)
	if err := chromedp.Do(root); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	return &Browser{t: t, root: root}
}

// Tab opens a new browser context (its own cookies: another user) with
// one tab, and returns the tab's context; actions on it fail after
// timeout. What its pages throw or log as errors is recorded (see Errors).
func (b *Browser) Tab(timeout time.Duration) context.Context {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.root, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if (m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException) && !expectedLog(m.Text) {
				b.record(fmt.Sprintf("%s: %s (%s)", m.Type, m.Text, m.URL))
			}
		}
	}()
	ctx, cancelT := context.WithTimeout(ctx, timeout)
	b.t.Cleanup(cancelT)
	return ctx
}

// expectedLog: what the browser logs as an error by design of a test (a
// refused request the test makes on purpose shows as a failed resource
// load).
func expectedLog(text string) bool {
	return strings.Contains(text, "status of 401") || strings.Contains(text, "status of 403") ||
		strings.Contains(text, "status of 400") || strings.Contains(text, "status of 404") || strings.Contains(text, "status of 409")
}

func (b *Browser) record(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errors = append(b.errors, s)
}

// Errors returns what the pages threw or logged as errors so far.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// ArtifactsDir is where screenshots go: $HOTPATCH_ARTIFACTS, or
// artifacts/ at the top of the repository.
func ArtifactsDir() string {
	if d := os.Getenv("HOTPATCH_ARTIFACTS"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "artifacts")
}

// Screenshot saves the whole page as ArtifactsDir()/browser/NAME.png and
// returns the path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	// Right after a page load the layout may not be measured yet
	// ("Cannot take screenshot with 0 width"): try again for a while.
	var png []byte
	var err error
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil || time.Now().After(end) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	dir := filepath.Join(ArtifactsDir(), "browser")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", p)
	return p
}

// SPKI returns the base64 SHA-256 of the public key of the certificate a
// TLS server at addr presents, checked against the CA in caPEM.
func SPKI(addr string, caPEM []byte) (string, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return "", errors.New("no certificate in the CA PEM")
	}
	host, _, _ := strings.Cut(addr, ":")
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: host})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// A11yScript checks the page for what a keyboard or screen-reader user
// trips over and returns the problems found (empty: none): controls
// without a label, images without alt text, buttons and links without a
// name, duplicate ids, not exactly one h1, no lang, no main landmark,
// tables without header cells.
const A11yScript = `(() => {
  const out = [];
  const name = (el) => (el.getAttribute('aria-label') || el.textContent || el.getAttribute('title') || '').trim() ||
    [...(el.getAttribute('aria-labelledby') || '').split(' ')].map((id) => document.getElementById(id)?.textContent || '').join('').trim();
  if (!document.documentElement.lang) out.push('html has no lang');
  if (!document.querySelector('main')) out.push('no main landmark');
  const h1 = document.querySelectorAll('main h1').length;
  if (h1 !== 1) out.push('main has ' + h1 + ' h1 elements');
  document.querySelectorAll('input:not([type=hidden]), select, textarea').forEach((el) => {
    if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby')) out.push('unlabelled ' + el.tagName.toLowerCase() + ' ' + (el.name || el.id));
  });
  document.querySelectorAll('img').forEach((el) => { if (!el.hasAttribute('alt')) out.push('img without alt: ' + el.src); });
  document.querySelectorAll('button, a[href]').forEach((el) => {
    if (el.closest('dialog:not([open])')) return;
    if (!name(el)) out.push(el.tagName.toLowerCase() + ' without a name: ' + el.outerHTML.slice(0, 80));
  });
  const seen = {};
  document.querySelectorAll('[id]').forEach((el) => { if (seen[el.id]) out.push('duplicate id ' + el.id); seen[el.id] = true; });
  document.querySelectorAll('main table').forEach((t) => { if (!t.querySelector('th')) out.push('table without header cells'); });
  document.querySelectorAll('svg[role=img]').forEach((s) => { if (!s.getAttribute('aria-label') && !s.getAttribute('aria-labelledby')) out.push('svg image without a name'); });
  return out;
})()`
