package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

const privHelperEnv = "HOTPATCH_PRIV_HELPER"

// TestPrivHelper is the child of TestMapFilesPermission: it applies the
// patch in HOTPATCH_PRIV_PATCH (key HOTPATCH_PRIV_KEY) to HOTPATCH_PRIV_PID
// and looks for the processes that map its target, and prints what each
// says, one line each.
func TestPrivHelper(t *testing.T) {
	if os.Getenv(privHelperEnv) == "" {
		t.Skip("run by TestMapFilesPermission")
	}
	var pid int
	fmt.Sscan(os.Getenv("HOTPATCH_PRIV_PID"), &pid)
	p, err := patch.LoadFile(os.Getenv("HOTPATCH_PRIV_PATCH"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := patch.ReadPublicKey(os.Getenv("HOTPATCH_PRIV_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Apply(pid, p, Options{Trusted: []patch.PublicKey{pub}})
	fmt.Printf("apply: %v (permission %v)\n", err, errors.Is(err, ErrPermission))
	pids, err := FindProcesses(p.Target.BuildID, "")
	fmt.Printf("find: %v %v (permission %v)\n", pids, err, errors.Is(err, ErrPermission))
	_, err = ProcessModules(pid, &BuildIDCache{})
	fmt.Printf("modules: %v (permission %v)\n", err, errors.Is(err, ErrPermission))
}

// TestMapFilesPermission runs apply as root without CAP_CHECKPOINT_RESTORE
// (and CAP_SYS_ADMIN), as a service unit lacking it would: the files a
// process maps cannot be opened through /proc/PID/map_files, and apply
// must say so, not that the process does not map its target. The process
// is left as it was.
func TestMapFilesPermission(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and setpriv (util-linux) to drop capabilities")
	}
	fx, err := fixture.Load("bounds_check")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := fx.Build(fixture.Orig, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := fx.Build(fixture.Fixed, fx.DefaultFlags())
	if err != nil {
		t.Fatal(err)
	}
	p, patchFile, keyFile := patchFiles(t, orig.Target, fixed.Target, "perm-test")
	proc := fixture.Start(t, orig.Program)
	if err := proc.WaitIdle(); err != nil {
		t.Fatal(err)
	}
	before := moduleText(t, proc.Pid(), p)

	cmd := exec.Command("setpriv", "--bounding-set=-checkpoint_restore,-sys_admin", "--inh-caps=-checkpoint_restore,-sys_admin",
		os.Args[0], "-test.run=^TestPrivHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), privHelperEnv+"=1", fmt.Sprintf("HOTPATCH_PRIV_PID=%d", proc.Pid()),
		"HOTPATCH_PRIV_PATCH="+patchFile, "HOTPATCH_PRIV_KEY="+keyFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	const want = "permission denied (needs CAP_CHECKPOINT_RESTORE or root)"
	lines := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			lines[k] = v
		}
	}
	for _, k := range []string{"apply", "find", "modules"} {
		if v := lines[k]; !strings.Contains(v, want) || !strings.Contains(v, "(permission true)") || strings.Contains(v, "does not map") {
			t.Errorf("%s without CAP_CHECKPOINT_RESTORE says %q; want %q", k, v, want)
		}
	}
	if after := moduleText(t, proc.Pid(), p); !bytes.Equal(before, after) {
		t.Errorf("the refused apply changed the process's code")
	}
	if got, err := proc.Probe(fx.Spec.Probes[0].Input); err != nil || got != fx.Spec.Probes[0].Orig {
		t.Errorf("process answered %q, %v", got, err)
	}
}
