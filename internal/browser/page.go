package browser

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Page is a test's handle on one tab: actions and checks that fail the
// test with the page's HTML and a screenshot.
type Page struct {
	t   testing.TB
	ctx context.Context
}

// NewPage wraps a tab (Browser.Tab).
func NewPage(t testing.TB, tab context.Context) *Page { return &Page{t: t, ctx: tab} }

// Context is the tab's chromedp context.
func (p *Page) Context() context.Context { return p.ctx }

// Do runs actions; a failure ends the test.
func (p *Page) Do(step string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.fail(step, err)
	}
}

func (p *Page) fail(step string, err error) {
	p.t.Helper()
	Screenshot(p.t, p.ctx, "failed-"+strings.ReplaceAll(step, " ", "-"))
	html, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.getElementById('main')?.outerHTML || document.documentElement.outerHTML`))
	p.t.Fatalf("%s: %v\npage: %s", step, err, html)
}

// Wait polls a JavaScript predicate until it holds, across page loads.
// The 30 s limit is a guard against a hang, not a timing assertion.
func (p *Page) Wait(what, predicate string) {
	p.t.Helper()
	var err error
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(25 * time.Millisecond) {
		var ok bool
		if ok, err = chromedp.Run(p.ctx, chromedp.Evaluate[bool]("!!("+predicate+")")); err == nil && ok {
			return
		}
		if p.ctx.Err() != nil {
			break
		}
	}
	if err == nil {
		err = fmt.Errorf("still false: %s", predicate)
	}
	p.fail("waiting for "+what, err)
}

// WaitLive waits for a dashboard page's event stream to be open.
func (p *Page) WaitLive() {
	p.t.Helper()
	p.Wait("the live stream", `document.getElementById('live-status')?.dataset.state === 'live'`)
}

// Eval evaluates a JavaScript expression that gives a string.
func (p *Page) Eval(expr string) string {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.fail("evaluating "+expr, err)
	}
	return v
}

// Mark leaves a value in the page's window, which a page load loses;
// Marked checks it is still there.
func (p *Page) Mark() {
	p.t.Helper()
	p.Eval(`window.__hotpatchMark = 'kept'`)
}

// Marked fails the test if the page was loaded again since Mark.
func (p *Page) Marked(what string) {
	p.t.Helper()
	if got := p.Eval(`String(window.__hotpatchMark)`); got != "kept" {
		p.t.Errorf("%s: the page was loaded again (mark %q)", what, got)
	}
}

// Check runs A11yScript on the page and reports each problem.
func (p *Page) Check(page string) {
	p.t.Helper()
	probs, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]string](A11yScript))
	if err != nil {
		p.fail("checking "+page, err)
	}
	for _, pr := range probs {
		p.t.Errorf("%s page: %s", page, pr)
	}
}

// Shot saves a screenshot (see Screenshot).
func (p *Page) Shot(name string) string {
	p.t.Helper()
	return Screenshot(p.t, p.ctx, name)
}
