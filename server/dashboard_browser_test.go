package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/hotpatch/hotpatch/internal/browser"
	"github.com/hotpatch/hotpatch/patch"
	"github.com/hotpatch/hotpatch/server/api"
)

// simDevice is an enrolled device that speaks the real device protocol
// (client certificate, long-poll sync, inventory reports) and applies
// the patch only when the test releases it, so the test decides when a
// rollout moves and watches the dashboard follow.
type simDevice struct {
	name, id string
	c        *caller
	buildID  string
	release  atomic.Bool
}

// run syncs until ctx ends, reporting the process as patched once the
// server asks for the patch and the device is released, and unpatched
// again when told to revert.
func (d *simDevice) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	var cursor int64
	reported := ""
	for ctx.Err() == nil {
		var resp api.SyncResponse
		if err := d.call(ctx, "GET", fmt.Sprintf("%s?cursor=%d&wait=300ms", api.PathDeviceSync, cursor), nil, &resp); err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		cursor = resp.Cursor
		want := "vulnerable"
		for _, p := range resp.Patches {
			if p.ID == "bounds-fix" && p.Action == api.ActionApply && d.release.Load() {
				want = "patched"
			}
		}
		if want != reported && d.call(ctx, "POST", api.PathDeviceReport, inventory(d.buildID, want == "patched"), nil) == nil {
			reported = want
		}
	}
}

func (d *simDevice) call(ctx context.Context, method, path string, in, out any) error {
	var body bytes.Buffer
	if in != nil {
		json.NewEncoder(&body).Encode(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.c.base+path, &body)
	if err != nil {
		return err
	}
	resp, err := d.c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// TestDashboardBrowser drives the dashboard in headless Chromium as an
// operator would: sign in (a wrong token first, then the right one typed
// and sent with Enter), read the overview, open the catalog, start a
// rollout from a patch's row, watch its rings fill as devices report
// (live, without a reload), halt it from the keyboard (cancelled once
// with Escape, then confirmed), resume it and see it finish, filter the
// event log, open a host; then a viewer, who sees no control that acts.
// Every page is checked for accessibility slips, the pages must log no
// script error or CSP refusal, and screenshots are kept in
// artifacts/browser/.
func TestDashboardBrowser(t *testing.T) {
	t.Parallel()
	s, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", AnyPublisher: true, Tick: 20 * time.Millisecond, ExposureEvery: 50 * time.Millisecond})
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
	b := browser.New(t, browser.Options{TrustSPKI: []string{spki}}) // skips (fails under make test) without Chromium

	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	data, p := testPatch(t)
	var info api.PatchInfo
	if st := admin.do("POST", api.PathPatches, data, &info); st != 200 {
		t.Fatalf("publish: HTTP %d", st)
	}
	bid := fmt.Sprintf("%x", p.Target.BuildID)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	devs := map[string]*simDevice{}
	for _, d := range []struct{ name, ring string }{{"canary-1", "canary"}, {"broad-1", "broad"}, {"broad-2", "broad"}} {
		c, id := enroll(t, s, d.name, map[string]string{"ring": d.ring})
		sd := &simDevice{name: d.name, id: id, c: c, buildID: bid}
		devs[d.name] = sd
		wg.Add(1)
		go sd.run(ctx, &wg)
	}

	tab := b.Tab(3 * time.Minute)
	u := browser.NewPage(t, tab)

	// Sign in: refused with a wrong token, then in with the admin token,
	// typed and sent with Enter, landing on the page first asked for.
	u.Do("open a page signed out", chromedp.Navigate(s.URL()+"/ui/rollouts"))
	u.Wait("the sign-in page", `document.querySelector('h1')?.textContent.includes('Sign in')`)
	u.Check("sign-in")
	u.Shot("01-signin")
	u.Do("a wrong token", chromedp.SendKeys("#token", "not-a-token"), chromedp.Click("button[type=submit]"))
	u.Wait("the refusal", `document.getElementById('error')?.textContent.includes('no such token') && document.getElementById('token').getAttribute('aria-invalid') === 'true'`)
	u.Do("the admin token", chromedp.SendKeys("#token", s.AdminToken()+kb.Enter))
	u.Wait("the rollouts page", `location.pathname === '/ui/rollouts' && document.querySelector('h1')?.textContent === 'Rollouts'`)

	// The overview: three hosts, none protected yet.
	u.Do("open the overview", chromedp.Navigate(s.URL()+"/ui/"))
	u.WaitLive()
	u.Wait("three hosts, 0% protected", `document.getElementById('stat-hosts').textContent === '3' && document.getElementById('stat-protected').textContent === '0%'`)
	u.Check("overview")
	u.Shot("02-overview")

	// The catalog shows what the patch is; its row starts a rollout.
	u.Do("open the catalog", chromedp.Navigate(s.URL()+"/ui/patches"))
	row := `document.querySelector('tr[data-patch="bounds-fix"]')`
	u.Wait("the patch's row", fmt.Sprintf(`%[1]s && %[1]s.textContent.includes('CVE-2026-0001') && %[1]s.textContent.includes(%[2]q) && %[1]s.textContent.includes(%[3]q)`,
		row, p.Functions[0].Name, patch.KeyID(p.Signer)))
	u.Check("catalog")
	u.Do("roll out from the catalog", chromedp.Click(`tr[data-patch="bounds-fix"] a.button`))
	u.Wait("the new-rollout form", fmt.Sprintf(`location.pathname === '/ui/rollouts/new' && document.getElementById('patch').value === %q`, info.SHA256))
	u.Check("new rollout")
	u.Do("fill in the rings", chromedp.Clear("#rings"), chromedp.SendKeys("#rings", "canary,broad"), chromedp.Clear("#soak"), chromedp.SendKeys("#soak", "0s"))
	u.Shot("03-new-rollout")
	u.Mark()
	u.Do("start the rollout", chromedp.Click("#start"))
	u.Wait("the rollout's page", `/^\/ui\/rollouts\/ro-[0-9a-f]+$/.test(location.pathname) && document.getElementById('notice')?.textContent === 'Rollout started.'`)
	u.Marked("the form was sent without a page load")
	id := u.Eval(`location.pathname.split('/').pop()`)

	// Watch it move: each ring fills as its devices report.
	ring := func(name, applied, state string) string {
		return fmt.Sprintf(`(() => { const r = document.querySelector('tr[data-ring=%q]'); return r && r.querySelector('[data-count=applied]').textContent === %q && r.textContent.includes(%q); })()`, name, applied, state)
	}
	u.Wait("canary active, nothing applied", ring("canary", "0/1", "active"))
	devs["canary-1"].release.Store(true)
	u.Wait("canary applied and done", ring("canary", "1/1", "done"))
	u.Wait("broad active", ring("broad", "0/2", "active"))
	devs["broad-1"].release.Store(true)
	u.Wait("broad half way", ring("broad", "1/2", "active"))
	u.Wait("the hosts table", `document.querySelector('#rollout-devices tr[data-device] td:last-child')?.textContent.includes('applied')`)
	u.Marked("progress came without a page load")
	u.Check("rollout")
	u.Shot("04-rollout-progress")

	// The overview during the rollout (the README's screenshot).
	u.Do("open the overview", chromedp.Navigate(s.URL()+"/ui/"))
	u.WaitLive()
	u.Wait("two of three protected, the chart drawn", fmt.Sprintf(`document.getElementById('stat-protected').textContent === '66%%' && document.querySelector('polyline.line') && document.querySelector('article[data-rollout=%q]')`, id))
	shot := u.Shot("05-overview-during-rollout")
	if os.Getenv("HOTPATCH_UPDATE_DOCS") == "1" && shot != "" {
		png, _ := os.ReadFile(shot)
		if err := os.WriteFile(filepath.Join("..", "docs", "img", "dashboard-overview.png"), png, 0o644); err != nil {
			t.Error(err)
		}
	}

	// Halt from the keyboard: Enter on the button asks; Escape cancels.
	u.Do("back to the rollout", chromedp.Navigate(s.URL()+"/ui/rollouts/"+id))
	u.WaitLive()
	u.Do("Enter on Halt", chromedp.Focus("#halt"), chromedp.KeyEvent(kb.Enter))
	u.Wait("the confirmation dialog, Cancel focused", fmt.Sprintf(`document.getElementById('confirm-dialog').open && document.getElementById('confirm-title').textContent === 'Halt rollout %s?' && document.activeElement.value === 'cancel'`, id))
	u.Shot("06-confirm-halt")
	u.Do("Escape", chromedp.KeyEvent(kb.Escape))
	u.Wait("the dialog closed", `!document.getElementById('confirm-dialog').open`)
	time.Sleep(300 * time.Millisecond) // a wrongly sent halt would land within this
	if ro := getRollout(admin, id); ro.State != api.StateRunning {
		t.Fatalf("after Escape the rollout is %s", ro.State)
	}
	u.Mark()
	u.Do("Halt, confirmed", chromedp.Click("#halt"), chromedp.Click("#confirm-ok"))
	u.Wait("halted", `document.getElementById('rollout-state').textContent.trim() === 'halted' && document.getElementById('notice')?.textContent === 'Rollout halted.' && !document.getElementById('halt')`)
	u.Marked("the halt was sent without a page load")
	if ro := getRollout(admin, id); ro.State != api.StateHalted || ro.Reason != "halted by token:admin" {
		t.Fatalf("after halting in the browser: %s (%s)", ro.State, ro.Reason)
	}
	u.Shot("07-halted")

	// Resume; the last device reports; the rollout finishes, live.
	u.Do("Resume, confirmed", chromedp.Click("#resume"), chromedp.Click("#confirm-ok"))
	u.Wait("running again", `document.getElementById('rollout-state').textContent.trim() === 'running'`)
	devs["broad-2"].release.Store(true)
	u.Wait("done", `document.getElementById('rollout-state').textContent.trim() === 'done'`)
	u.Wait("broad complete", ring("broad", "2/2", "done"))
	u.Marked("the end came without a page load")
	u.Shot("08-done")

	// The event log, filtered with its form.
	u.Do("open the event log", chromedp.Navigate(s.URL()+"/ui/events"))
	u.Do("filter by type", chromedp.SetValue("#f-type", "rollout_halt"), chromedp.Click(".filters button[type=submit]"))
	u.Wait("only the halt", `location.search.includes('type=rollout_halt') && document.querySelectorAll('#event-log tbody tr').length === 1 && document.querySelector('#event-log tbody tr').textContent.includes('token:admin')`)
	u.Check("events")
	u.Shot("09-events")

	// A host, from the hosts list.
	u.Do("open the hosts", chromedp.Navigate(s.URL()+"/ui/hosts"))
	u.Check("hosts")
	u.Do("open canary-1", chromedp.Click(fmt.Sprintf(`tr[data-device=%q] a`, devs["canary-1"].id)))
	u.Wait("its process with the patch applied", `document.querySelector('#host-processes tr[data-pid="100"]')?.textContent.includes('bounds-fix v1 applied')`)
	u.Check("host")
	u.Shot("10-host")

	// A viewer, in a browser context of its own: no control that acts.
	tok, err := s.NewToken(api.RoleViewer, "auditor")
	if err != nil {
		t.Fatal(err)
	}
	v := browser.NewPage(t, b.Tab(time.Minute))
	v.Do("viewer signs in", chromedp.Navigate(s.URL()+"/ui/rollouts/"+id), chromedp.SendKeys("#token", tok+kb.Enter))
	v.Wait("the rollout, read only", fmt.Sprintf(`location.pathname === '/ui/rollouts/%s' && document.querySelector('.role').textContent === 'viewer'`, id))
	v.WaitLive()
	if n := v.Eval(`String(document.querySelectorAll('form[data-confirm], #halt, #resume, #rollback').length)`); n != "0" {
		t.Errorf("the viewer sees %s controls that act on the rollout", n)
	}
	v.Do("viewer opens the catalog", chromedp.Navigate(s.URL()+"/ui/patches"))
	if n := v.Eval(`String(document.querySelectorAll('main a.button, main button').length)`); n != "0" {
		t.Errorf("the viewer sees %s buttons in the catalog", n)
	}
	v.Shot("11-viewer")

	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the pages logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

func getRollout(admin *caller, id string) api.Rollout {
	var ro api.Rollout
	admin.do("GET", api.PathRollout+id, nil, &ro)
	return ro
}

// TestDashboardNoScript: the same dashboard in Chromium with JavaScript
// switched off: sign in, start a rollout with the form, halt it through
// the server's confirmation page. Every page is plain HTML and forms.
func TestDashboardNoScript(t *testing.T) {
	t.Parallel()
	s := startServer(t, t.TempDir())
	defer s.Close()
	spki, err := browser.SPKI(strings.TrimPrefix(s.URL(), "https://"), s.CA())
	if err != nil {
		t.Fatal(err)
	}
	b := browser.New(t, browser.Options{TrustSPKI: []string{spki}})
	admin := newCaller(t, s, s.AdminToken(), nil, nil)
	data, _ := testPatch(t)
	var info api.PatchInfo
	if st := admin.do("POST", api.PathPatches, data, &info); st != 200 {
		t.Fatalf("publish: HTTP %d", st)
	}
	enroll(t, s, "quiet-1", map[string]string{"ring": "canary"})

	u := browser.NewPage(t, b.Tab(2*time.Minute))
	u.Do("switch JavaScript off", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}))
	u.Do("sign in", chromedp.Navigate(s.URL()+"/ui/rollouts/new"), chromedp.SendKeys("#token", s.AdminToken()), chromedp.Click("button[type=submit]"))
	u.Wait("the new-rollout form", `location.pathname === '/ui/rollouts/new' && document.getElementById('rings').value === 'canary'`)
	u.Do("start", chromedp.SetValue("#patch", info.SHA256), chromedp.Clear("#soak"), chromedp.SendKeys("#soak", "1h"), chromedp.Click("#start"))
	u.Wait("the rollout's page", `/^\/ui\/rollouts\/ro-[0-9a-f]+$/.test(location.pathname) && document.getElementById('notice')?.textContent === 'Rollout started.'`)
	if st := u.Eval(`document.getElementById('live-status').textContent`); st != "" {
		t.Errorf("without a script the header claims %q", st)
	}
	id := u.Eval(`location.pathname.split('/').pop()`)
	u.Do("Halt", chromedp.Click("#halt"))
	u.Wait("the confirmation page", fmt.Sprintf(`document.querySelector('h1').textContent === 'Halt rollout %s?'`, id))
	u.Check("confirmation")
	u.Shot("noscript-01-confirm")
	if ro := getRollout(admin, id); ro.State != api.StateRunning {
		t.Fatalf("the rollout is %s before the confirmation", ro.State)
	}
	u.Do("confirm", chromedp.Click("form.actions button[type=submit]"))
	u.Wait("halted", `document.getElementById('notice')?.textContent === 'Rollout halted.' && document.getElementById('rollout-state').textContent.trim() === 'halted'`)
	if ro := getRollout(admin, id); ro.State != api.StateHalted {
		t.Errorf("after the confirmation page: %s", ro.State)
	}
	u.Shot("noscript-02-halted")
}
