package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/internal/browser"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/server/api"
)

// TestDashboardRealFleet runs the dashboard against real agents: two
// hosts (PID namespaces, one enrolled hotpatchd each, canary and broad),
// each with a process running the vulnerable build. In Chromium an
// operator signs in, starts a rollout with a soak after the canary, sees
// the canary host protected in memory (its real process now answers as
// fixed) while broad waits, then halts and rolls back from the rollout's
// page; the canary's agent takes the patch off its process again, and the
// host page shows it live. The overview screenshot taken mid-rollout is
// the README's (HOTPATCH_UPDATE_DOCS=1 writes it to docs/img).
func TestDashboardRealFleet(t *testing.T) {
	t.Parallel()
	needRoot(t)
	dir := t.TempDir()
	key, pub := testKey(t, dir)
	f := newFleet(t, dir, pub)
	spki, err := browser.SPKI(strings.TrimPrefix(f.srv.URL(), "https://"), f.srv.CA())
	if err != nil {
		t.Fatal(err)
	}
	b := browser.New(t, browser.Options{TrustSPKI: []string{spki}})
	ctx := context.Background()

	orig, fixed := boundsCheck(t)
	data := signedWith(t, orig, fixed, builder.Options{ID: "bounds-fix", CVEs: []string{"CVE-2026-0001"}, Description: "bounds check of set"}, key)
	info, err := f.admin.Publish(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	type hostAgent struct {
		h     *host
		state string
		proc  *fixture.Proc
	}
	hosts := map[string]*hostAgent{}
	for _, ring := range []string{"canary", "broad"} {
		h := newHost(t)
		cfg := f.enrolledConfig(filepath.Join(dir, "host-"+ring), h, pub, map[string]string{"ring": ring})
		cfg.Name = ring + "-host"
		p, _ := h.start(t, orig)
		startAgent(t, cfg)
		hosts[ring] = &hostAgent{h: h, state: cfg.StateDir, proc: p}
	}
	var devices []api.Device
	waitFor(t, 30*time.Second, func() bool {
		devices, err = f.admin.Devices(ctx)
		return err == nil && len(devices) == 2 && devices[0].Processes > 0 && devices[1].Processes > 0
	}, "two hosts enrolled with their inventories")
	deviceID := map[string]string{}
	for _, d := range devices {
		deviceID[d.Labels["ring"]] = d.ID
	}

	u := browser.NewPage(t, b.Tab(3*time.Minute))
	u.Do("sign in", chromedp.Navigate(f.srv.URL()+"/ui/rollouts/new?patch="+info.SHA256), chromedp.SendKeys("#token", f.srv.AdminToken()+kb.Enter))
	u.Wait("the new-rollout form", fmt.Sprintf(`location.pathname === '/ui/rollouts/new' && document.getElementById('patch').value === %q`, info.SHA256))
	u.Wait("canary offered first", `document.getElementById('rings').value === 'canary,broad'`)
	u.Do("a soak after each ring", chromedp.Clear("#soak"), chromedp.SendKeys("#soak", "1h"), chromedp.Click("#start"))
	u.Wait("the rollout's page", `/^\/ui\/rollouts\/ro-[0-9a-f]+$/.test(location.pathname)`)
	id := u.Eval(`location.pathname.split('/').pop()`)
	u.WaitLive()
	ring := func(name, applied, state string) string {
		return fmt.Sprintf(`(() => { const r = document.querySelector('tr[data-ring=%q]'); return r && r.querySelector('[data-count=applied]').textContent === %q && r.textContent.includes(%q); })()`, name, applied, state)
	}
	u.Wait("the canary applied, soaking", ring("canary", "1/1", "soaking"))
	u.Wait("broad waiting for the soak", ring("broad", "–", "pending"))
	if !answersFixed(t, hosts["canary"].proc) {
		t.Fatal("the dashboard shows the canary applied but its process does not answer as fixed")
	}
	u.Shot("fleet-01-rollout-soaking")

	u.Do("the overview", chromedp.Navigate(f.srv.URL()+"/ui/"))
	u.WaitLive()
	u.Wait("one of two hosts protected, the chart drawn", `document.getElementById('stat-protected').textContent === '50%' && document.querySelector('polyline.line') && document.querySelector('tr[data-cve="CVE-2026-0001"]')?.textContent.includes('1')`)
	u.Check("overview")
	shot := u.Shot("fleet-02-overview-during-rollout")
	if os.Getenv("HOTPATCH_UPDATE_DOCS") == "1" && shot != "" {
		png, _ := os.ReadFile(shot)
		if err := os.WriteFile(filepath.Join("..", "docs", "img", "dashboard-overview.png"), png, 0o644); err != nil {
			t.Error(err)
		}
	}

	host := f.srv.URL() + "/ui/hosts/" + deviceID["canary"]
	u.Do("the canary host", chromedp.Navigate(host))
	u.Wait("its process patched, the agent's event", `[...document.querySelectorAll('#host-processes tr[data-pid]')].some((r) => r.textContent.includes('bounds-fix v1 applied')) && document.querySelector('#host-events')?.textContent.includes('applied')`)
	u.Check("host")
	u.Shot("fleet-03-canary-host")

	u.Do("back to the rollout", chromedp.Navigate(f.srv.URL()+"/ui/rollouts/"+id))
	u.WaitLive()
	u.Do("halt", chromedp.Click("#halt"), chromedp.Click("#confirm-ok"))
	u.Wait("halted", `document.getElementById('rollout-state').textContent.trim() === 'halted'`)
	u.Do("roll back", chromedp.Click("#rollback"), chromedp.Click("#confirm-ok"))
	u.Wait("rolled back", `document.getElementById('rollout-state').textContent.trim() === 'rolled back'`)
	u.Shot("fleet-04-rolled-back")

	u.Do("the canary host again", chromedp.Navigate(host))
	u.WaitLive()
	u.Mark()
	u.Wait("the patch taken off, live", `![...document.querySelectorAll('#host-processes tr[data-pid]')].some((r) => r.textContent.includes('bounds-fix v1 applied')) && document.querySelector('#host-events')?.textContent.includes('reverted')`)
	u.Marked("the revert showed without a page load")
	if answersFixed(t, hosts["canary"].proc) {
		t.Error("rolled back in the dashboard, but the canary's process still answers as fixed")
	}
	if answersFixed(t, hosts["broad"].proc) {
		t.Error("the broad host got the patch although its ring never started")
	}
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the pages logged errors:\n%s", strings.Join(errs, "\n"))
	}
}
