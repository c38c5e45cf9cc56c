package builder

import (
	"errors"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
)

// TestStartupAfterEarlyLoop: main loops over its arguments before the
// calls it makes once, then hands over to serve(), whose loop runs for the
// life of the process. A fix in read_defaults (called once, after that
// early loop) is start-up only and refused; a fix in handle (called in
// serve()'s loop, serve itself being called once) takes effect and is
// built. (The first rule, "below the first backward target in main", took
// read_defaults for running code: dnsmasq's CVE-2023-28450 in the corpus.)
func TestStartupAfterEarlyLoop(t *testing.T) {
	t.Parallel()
	for _, flags := range [][]string{{"-O2", "-g"}, {"-O0", "-g"}, {"-O2", "-fno-pie", "-no-pie"}} {
		all := append(append([]string{}, fixture.PatchFlags[1:]...), flags...)
		key := strings.Join(flags, "")
		build := func(variant string) string {
			p, err := fixture.Compile("startup_loop-"+variant+key, []string{"testdata/startup_loop/" + variant + "/main.c"}, all...)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		orig := build("orig")
		_, err := Build(orig, build("fixed_defaults"), Options{ID: "defaults"})
		var so *StartupOnlyError
		if !errors.As(err, &so) || so.Function != "read_defaults" {
			t.Errorf("%v: a fix in read_defaults: %v; want it refused as start-up only", flags, err)
		}
		p, err := Build(orig, build("fixed"), Options{ID: "handle"})
		if err != nil {
			t.Errorf("%v: a fix in handle, called from serve()'s loop: %v", flags, err)
			continue
		}
		if len(p.Functions) != 1 || p.Functions[0].Name != "handle" {
			t.Errorf("%v: the patch carries %d functions, want handle alone", flags, len(p.Functions))
		}
	}
}
