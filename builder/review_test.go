package builder

import (
	"errors"
	"slices"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

func loadPair(t *testing.T, name string, fl func(*fixture.Flags)) (*fixture.Fixture, string, string) {
	t.Helper()
	fx, err := fixture.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	flags := fx.DefaultFlags()
	if fl != nil {
		fl(&flags)
	}
	orig, fixed := buildPair(t, fx, flags)
	return fx, orig.Target, fixed.Target
}

// TestLayoutCheck checks the facts of a layout refusal, that a patch whose
// changed types only new code uses is marked checked, and that without
// DWARF the same refused fix builds, marked not checked.
func TestLayoutCheck(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		fixture, typ, member string
	}{
		{"layout_replaced_field", "struct session", "level"},
		{"layout_inserted", "struct session", "user"},
		{"layout_append", "struct session", "strikes"},
	} {
		_, orig, fixed := loadPair(t, tt.fixture, nil)
		_, err := Build(orig, fixed, Options{})
		var le *LayoutError
		if !errors.As(err, &le) || le.Type != tt.typ || le.Member != tt.member || le.Function != "main.c:set_level" {
			t.Errorf("%s: %v (%#v), want a LayoutError for %s member %s used by set_level", tt.fixture, err, le, tt.typ, tt.member)
		}
	}

	_, orig, fixed := loadPair(t, "layout_new_type", nil)
	p, err := Build(orig, fixed, Options{})
	if err != nil {
		t.Fatalf("layout_new_type: %v", err)
	}
	if p.Flags&patch.FlagLayoutChecked == 0 {
		t.Errorf("layout_new_type: the patch is not marked layout-checked")
	}

	// The same unsafe fix without -g: nothing to check with, so it builds,
	// and the patch says layouts were not checked.
	_, orig, fixed = loadPair(t, "layout_replaced_field", func(f *fixture.Flags) { f.Debug = false })
	p, err = Build(orig, fixed, Options{})
	if err != nil {
		t.Fatalf("layout_replaced_field without -g: %v", err)
	}
	if p.Flags&patch.FlagLayoutChecked != 0 {
		t.Errorf("a patch built without DWARF is marked layout-checked")
	}
}

// TestStartupOnlyAllowed builds the start-up-only fixes with the opt-in:
// the patch is made, marked start-up only, and still exact.
func TestStartupOnlyAllowed(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"startup_options", "startup_ctor"} {
		_, orig, fixed := loadPair(t, name, nil)
		_, err := Build(orig, fixed, Options{})
		var se *StartupOnlyError
		if !errors.As(err, &se) {
			t.Errorf("%s: %v, want a StartupOnlyError", name, err)
		}
		p, err := Build(orig, fixed, Options{AllowStartupOnly: true})
		if err != nil {
			t.Fatalf("%s with AllowStartupOnly: %v", name, err)
		}
		if !p.StartupOnly() {
			t.Errorf("%s: patch not marked start-up only", name)
		}
		if err := roundTrip(orig, fixed, p); err != nil {
			t.Errorf("%s: round trip: %v", name, err)
		}
	}
	// A fix that runs in the request path is not start-up only, also when
	// start-up code calls the same function.
	_, orig, fixed := loadPair(t, "bounds_check", nil)
	p, err := Build(orig, fixed, Options{AllowStartupOnly: true})
	if err != nil || p.StartupOnly() {
		t.Errorf("bounds_check: %v, startup-only %v; want a patch that takes effect", err, p != nil && p.StartupOnly())
	}
}

// TestStartupOnlyFlagMatrix checks the start-up analysis at other
// optimisation levels and without PIE: main's loop and the constructor are
// found however gcc lays them out.
func TestStartupOnlyFlagMatrix(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"startup_options", "startup_ctor", "startup_dispatch"} {
		for _, v := range []fixture.Flags{{Opt: "-O0"}, {Opt: "-O1"}, {Opt: "-O3"}, {Opt: "-Os"}, {Opt: "-O2", NoPIE: true}} {
			_, orig, fixed := loadPair(t, name, func(f *fixture.Flags) { f.Opt, f.NoPIE = v.Opt, v.NoPIE })
			_, err := Build(orig, fixed, Options{})
			var se *StartupOnlyError
			if !errors.As(err, &se) {
				t.Errorf("%s %s nopie=%v: %v, want a StartupOnlyError", name, v.Opt, v.NoPIE, err)
			}
		}
	}
}

// TestNeverApplies checks the facts of the refusals of patches that could
// never apply or would change nothing.
func TestNeverApplies(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ fixture, function string }{
		{"refuse_main", "main"},
		{"refuse_thread_loop", "main.c:listener"},
		{"refuse_short", "is_restricted"},
	} {
		_, orig, fixed := loadPair(t, tt.fixture, nil)
		_, err := Build(orig, fixed, Options{AllowStartupOnly: true, AllowNewExports: true})
		var ne *NeverAppliesError
		if !errors.As(err, &ne) || ne.Function != tt.function {
			t.Errorf("%s: %v, want a NeverAppliesError for %s", tt.fixture, err, tt.function)
		}
		// The engine's own refusal is tested with such patches.
		if _, err := Build(orig, fixed, Options{AllowNeverApplies: true}); err != nil {
			t.Errorf("%s with AllowNeverApplies: %v", tt.fixture, err)
		}
	}
	_, orig, fixed := loadPair(t, "refuse_no_redirect", nil)
	_, err := Build(orig, fixed, Options{AllowStartupOnly: true})
	var nr *NoRedirectError
	if !errors.As(err, &nr) || !slices.Equal(nr.Carried, []string{"harden_limits"}) {
		t.Errorf("refuse_no_redirect: %v, want a NoRedirectError carrying harden_limits", err)
	}
	// A worker thread's top function that returns is patchable.
	_, orig, fixed = loadPair(t, "multithreaded", nil)
	if _, err := Build(orig, fixed, Options{}); err != nil {
		t.Errorf("multithreaded: %v", err)
	}
}

// TestNewExportAllowed builds a fix that adds an exported function with the
// opt-in: the function is carried, marked exported.
func TestNewExportAllowed(t *testing.T) {
	t.Parallel()
	_, orig, fixed := loadPair(t, "refuse_new_export", nil)
	_, err := Build(orig, fixed, Options{})
	var ee *NewExportError
	if !errors.As(err, &ee) || !slices.Equal(ee.Symbols, []string{"svc_port_valid"}) {
		t.Fatalf("%v, want a NewExportError naming svc_port_valid", err)
	}
	p, err := Build(orig, fixed, Options{AllowNewExports: true})
	if err != nil {
		t.Fatal(err)
	}
	var exported []string
	for _, f := range p.Functions {
		if f.Flags&patch.FuncExported != 0 {
			exported = append(exported, f.Name)
		}
	}
	if !slices.Equal(exported, []string{"svc_port_valid"}) {
		t.Errorf("functions marked exported: %v, want [svc_port_valid]", exported)
	}
	if err := p.Validate(); err != nil {
		t.Error(err)
	}
	if err := roundTrip(orig, fixed, p); err != nil {
		t.Errorf("round trip: %v", err)
	}
}

// TestLayoutCheckVariants runs the layout check at other optimisation
// levels and without PIE: the refusals stay, and fixes that change no type
// build, marked checked.
func TestLayoutCheckVariants(t *testing.T) {
	t.Parallel()
	variants := []fixture.Flags{{Opt: "-O0"}, {Opt: "-O1"}, {Opt: "-O3"}, {Opt: "-Os"}, {Opt: "-O2", NoPIE: true}}
	for _, v := range variants {
		set := func(f *fixture.Flags) { f.Opt, f.NoPIE, f.Debug = v.Opt, v.NoPIE, true }
		for _, name := range []string{"layout_replaced_field", "layout_inserted", "layout_append"} {
			_, orig, fixed := loadPair(t, name, set)
			var le *LayoutError
			if _, err := Build(orig, fixed, Options{}); !errors.As(err, &le) || le.Type != "struct session" {
				t.Errorf("%s %s nopie=%v: %v, want a layout refusal of struct session", name, v.Opt, v.NoPIE, err)
			}
		}
		for _, name := range []string{"layout_new_type", "bounds_check", "state_counters", "new_helper", "multithreaded"} {
			_, orig, fixed := loadPair(t, name, set)
			p, err := Build(orig, fixed, Options{})
			if err != nil {
				t.Errorf("%s %s nopie=%v -g: %v", name, v.Opt, v.NoPIE, err)
				continue
			}
			if p.Flags&patch.FlagLayoutChecked == 0 {
				t.Errorf("%s %s nopie=%v -g: patch not marked layout-checked", name, v.Opt, v.NoPIE)
			}
		}
	}
}

// signLoad signs p with a new key and loads it back, as an agent would
// receive it. (The builder's tests cannot use testutil.SignLoad: it
// imports this package.)
func signLoad(t testing.TB, p *patch.Patch) (*patch.Patch, patch.PublicKey) {
	t.Helper()
	key, pub, err := patch.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	data, err := patch.Sign(p, key)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := patch.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	return loaded, pub
}
