package server

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/hotpatch/hotpatch/internal/browser"
	"github.com/hotpatch/hotpatch/server/api"
)

// TestDashboardEventsWidth: at 1280 px the events page fits its window:
// a message carrying long digests wraps instead of widening the table.
func TestDashboardEventsWidth(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	s, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", AnyPublisher: true, Tick: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	spki, err := browser.SPKI(strings.TrimPrefix(s.URL(), "https://"), s.CA())
	if err != nil {
		t.Fatal(err)
	}
	b := browser.New(t, browser.Options{TrustSPKI: []string{spki}, Width: 1280, Height: 800})
	dev, _ := enroll(t, s, "wide-host", nil)
	digest := strings.Repeat("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", 2)
	evs := api.DeviceEvents{Events: []api.DeviceEvent{{Time: time.Now(), Type: "patch_refused", Patch: "p", Message: "sha256:" + digest + " does not match sha256:" + digest}}}
	if st := dev.do("POST", api.PathDeviceEvents, evs, nil); st != 204 {
		t.Fatalf("events: HTTP %d", st)
	}
	u := browser.NewPage(t, b.Tab(time.Minute))
	u.Do("sign in", chromedp.Navigate(s.URL()+"/ui/events"))
	u.Wait("the sign-in page", `document.querySelector('h1')?.textContent.includes('Sign in')`)
	u.Do("the admin token", chromedp.SendKeys("#token", s.AdminToken()+kb.Enter))
	u.Wait("the events page with the long message", `location.pathname === '/ui/events' && document.body.textContent.includes('does not match')`)
	d := "document.documentElement"
	if got := u.Eval(`String(` + d + `.scrollWidth <= ` + d + `.clientWidth) + ": " + ` + d + `.scrollWidth + " px of content in " + ` + d + `.clientWidth`); !strings.HasPrefix(got, "true") {
		u.Shot("events-overflow")
		t.Errorf("the events page is wider than its 1280 px window: %s", got)
	}
}
