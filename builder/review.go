package builder

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hotpatch/hotpatch/patch"
)

// review runs the checks that decide whether a laid-out patch is safe, can
// apply at all and takes effect, in this order: type layouts (DWARF),
// patches that can never apply, patches that redirect nothing, new exported
// symbols, and code that runs only at start-up. It sets the patch flags
// that record what it found (FlagLayoutChecked, FlagStartupOnly,
// FuncExported).
func (b *builder) review(p *patch.Patch, opts Options) error {
	checked, err := b.checkLayouts()
	if err != nil {
		return err
	}
	if checked {
		p.Flags |= patch.FlagLayoutChecked
	}
	g, err := b.callGraph()
	if err != nil {
		debugf("no call graph, start-up and thread checks skipped: %v", err)
		g = nil
	}
	if err := b.checkApplicable(p, g, opts.AllowNeverApplies); err != nil {
		return err
	}
	if err := b.checkExports(p, opts.AllowNewExports); err != nil {
		return err
	}
	if startup := b.checkEffect(p, g); startup != nil {
		if !opts.AllowStartupOnly {
			return startup
		}
		p.Flags |= patch.FlagStartupOnly
	}
	return nil
}

// redirected returns the original functions whose entries the patch
// redirects, sorted by address.
func (b *builder) redirected(p *patch.Patch) []*symbol {
	var out []*symbol
	for _, fn := range p.Functions {
		if !fn.Redirected() {
			continue
		}
		if s := b.orig.funcAt(fn.OldAddr); s != nil && s.addr == fn.OldAddr {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out
}

// NeverAppliesError reports a patch that the engine could never apply: a
// function it replaces is always on some thread's stack, or too short for
// the jump written at its entry.
type NeverAppliesError struct {
	Function string
	Reason   string
}

func (e *NeverAppliesError) Error() string {
	return fmt.Sprintf("refused: the patch could never apply: %s %s", e.Function, e.Reason)
}

// NoRedirectError reports a patch that replaces no function's entry, so
// applying it would change nothing a process runs.
type NoRedirectError struct {
	Carried []string // the functions the patch would carry
}

func (e *NoRedirectError) Error() string {
	return fmt.Sprintf("refused: the patch redirects no function: its code (%s) is reached only from code the patch does not replace, so applying it would change nothing", strings.Join(e.Carried, ", "))
}

// redirectSize is the jump the engine writes at a replaced function's entry
// (jmp rel32, after endbr64 when the function starts with one); the engine
// maps the patch within ±2 GiB of the module so that this form reaches.
const redirectSize = 5

// checkApplicable refuses patches that can never apply: one that replaces
// main, the top function of a thread that never returns, or an entry too
// short for the redirect (unless allowNever); and one that redirects
// nothing.
func (b *builder) checkApplicable(p *patch.Patch, g *callGraph, allowNever bool) error {
	targets := b.redirected(p)
	if len(targets) == 0 {
		var carried []string
		for _, fn := range p.Functions {
			if fn.NewSize > 0 {
				carried = append(carried, fn.Name)
			}
		}
		return &NoRedirectError{Carried: carried}
	}
	if allowNever {
		return nil
	}
	for _, o := range targets {
		if o.name == "main" && o.file == "" && b.orig.typ != patch.SharedObject {
			return &NeverAppliesError{Function: "main", Reason: "is on the main thread's stack for the life of the process; move the fix into a function main calls, or restart the service"}
		}
		room := o.size
		if code, ok := b.orig.bytesAt(o.addr, min(o.size, 4)); ok && isEndbr64(code) {
			room -= 4
		}
		if room < redirectSize {
			return &NeverAppliesError{Function: o.display(), Reason: fmt.Sprintf("has %d byte(s) of code at its entry, too short for the %d-byte jump that redirects it; make the fix in its callers too, or restart the service", room, redirectSize)}
		}
	}
	if g == nil {
		return nil
	}
	for _, o := range targets {
		if creator := g.threadStart[o]; creator != "" && b.neverReturns(o, g) {
			return &NeverAppliesError{Function: o.display(), Reason: fmt.Sprintf("is the top function of a thread (started by pthread_create in %s) and has no return path, so a running thread never leaves it; move the fix into a function it calls, or restart the service", creator)}
		}
	}
	return nil
}

func isEndbr64(code []byte) bool {
	return len(code) >= 4 && code[0] == 0xf3 && code[1] == 0x0f && code[2] == 0x1e && code[3] == 0xfa
}
