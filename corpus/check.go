package corpus

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Outcomes of a check.
const (
	Patched = "patched" // built, applied live under load, probe fixed, reverted, probe back
	Refused = "refused" // hotpatch build refused
	Failed  = "FAILED"  // anything else: the builder or the live check went wrong
)

// Result is the measure of one fix in one variant.
type Result struct {
	Project   string   `json:"project"`
	Package   string   `json:"package"`
	Fix       string   `json:"fix"`
	CVEs      []string `json:"cves"`
	Variant   string   `json:"variant"`
	Expect    string   `json:"expect"`
	Functions []string `json:"functions"` // in the patch (or, when none was built, the fix's own)
	// Extra: functions in the patch that the fix's source change does not
	// name (gcc clones count as their function): inlining explains some, a
	// builder that sees a change where there is none the rest.
	Extra      []string `json:"extra,omitempty"`
	PatchBytes int64    `json:"patch_bytes"`
	Outcome    string   `json:"outcome"`
	// Correct: patched when a patch was expected, refused when a refusal was.
	Correct  bool   `json:"correct"`
	Detail   string `json:"detail"`
	Requests int64  `json:"requests"` // load requests answered during the live check
	PauseUS  int64  `json:"pause_us"`
}

// Runner checks fixes: it builds with a Builder and drives the hotpatch CLI.
type Runner struct {
	B        *Builder
	Hotpatch string // the hotpatch binary
	Key, Pub string // signing key pair
	Workers  int    // load clients

	srcs    map[string]string // project → pristine tree
	srcErrs map[string]error  // project → why its source could not be prepared (not retried per fix)
}

func (r *Runner) pristine(p *Project) (string, []string, error) {
	if r.srcs == nil {
		r.srcs = map[string]string{}
	}
	if r.srcErrs == nil {
		r.srcErrs = map[string]error{}
	}
	if err := r.srcErrs[p.Name]; err != nil {
		return "", nil, err
	}
	dir, ok := r.srcs[p.Name]
	if !ok {
		var err error
		if dir, err = r.B.Source(p); err != nil {
			r.srcErrs[p.Name] = err
			return "", nil, err
		}
		r.srcs[p.Name] = dir
	}
	series, err := r.B.Series(dir)
	return dir, series, err
}

// target is how to run one build of a fix.
type target struct {
	module string   // the ELF file the patch is built for (orig) or from (fixed)
	exe    string   // what to start
	env    []string // its environment
}

func (r *Runner) targets(p *Project, f Fix, variant string) (orig, fixed target, err error) {
	pristine, series, err := r.pristine(p)
	if err != nil {
		return orig, fixed, err
	}
	to, tf, err := r.B.Trees(p, f, series)
	if err != nil {
		return orig, fixed, err
	}
	od, err := r.B.BuildTree(p, pristine, series, to, variant)
	if err != nil {
		return orig, fixed, err
	}
	fd, err := r.B.BuildTree(p, pristine, series, tf, variant)
	if err != nil {
		return orig, fixed, err
	}
	if p.Kind == "executable" {
		o, f := filepath.Join(od, p.Build.Exe), filepath.Join(fd, p.Build.Exe)
		return target{module: o, exe: o}, target{module: f, exe: f}, nil
	}
	if variant == PIE {
		drv, err := r.B.Driver(p, od, to.key(), PIE)
		if err != nil {
			return orig, fixed, err
		}
		os, fs := filepath.Join(od, p.Build.Shared), filepath.Join(fd, p.Build.Shared)
		return target{module: Realpath(os), exe: drv, env: []string{"LD_LIBRARY_PATH=" + filepath.Dir(os)}},
			target{module: Realpath(fs), exe: drv, env: []string{"LD_LIBRARY_PATH=" + filepath.Dir(fs)}}, nil
	}
	do, err := r.B.Driver(p, od, to.key(), NoPIE)
	if err != nil {
		return orig, fixed, err
	}
	df, err := r.B.Driver(p, fd, tf.key(), NoPIE)
	if err != nil {
		return orig, fixed, err
	}
	return target{module: do, exe: do}, target{module: df, exe: df}, nil
}

func (r *Runner) start(p *Project, t target) (*Service, error) {
	if p.Kind == "executable" {
		return StartServer(t.exe, p.Service.Args, p.Service.Protocol)
	}
	return StartDriver(t.exe, t.env)
}

func (p *Project) loadArg() string {
	if p.Kind == "executable" {
		return p.Service.Load
	}
	return p.Driver.Load
}

func (r *Runner) hotpatch(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.Hotpatch, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return out.String(), fmt.Errorf("%s", oneLine(msg))
	}
	return out.String(), nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// Check measures one fix in one variant.
func (r *Runner) Check(p *Project, f Fix, variant string) Result {
	res := Result{Project: p.Name, Package: p.Package + " " + p.Version, Fix: f.ID, CVEs: f.CVEs, Variant: variant,
		Expect: f.Expect, Functions: f.Functions}
	fail := func(format string, a ...any) Result {
		res.Outcome, res.Correct, res.Detail = Failed, false, fmt.Sprintf(format, a...)
		return res
	}
	orig, fixed, err := r.targets(p, f, variant)
	if err != nil {
		return fail("corpus build: %v", oneLine(err.Error()))
	}
	out := filepath.Join(r.B.Cache, "patches", f.ID+"-"+variant+".hpatch")
	os.MkdirAll(filepath.Dir(out), 0o755)
	os.Remove(out)
	id := f.ID + "-" + variant
	args := []string{"build", "--original", orig.module, "--patched", fixed.module, "--key", r.Key, "-o", out, "--id", id,
		"--description", f.Title}
	for _, c := range f.CVEs {
		args = append(args, "--cve", c)
	}
	if _, err := r.hotpatch(5*time.Minute, args...); err != nil {
		if f.Expect == "refuse" {
			res.Outcome, res.Correct, res.Detail = Refused, true, err.Error()
			return res
		}
		res.Outcome, res.Detail = Refused, err.Error()
		return fail("refused: %v", err)
	}
	if st, err := os.Stat(out); err == nil {
		res.PatchBytes = st.Size()
	}
	if js, err := r.hotpatch(time.Minute, "inspect", "--json", out); err == nil {
		var sum struct {
			Functions []struct {
				Name, Kind string
			} `json:"functions"`
		}
		if json.Unmarshal([]byte(js), &sum) == nil {
			res.Functions = nil
			named := map[string]bool{}
			for _, n := range f.Functions {
				named[baseName(n)] = true
			}
			for _, fn := range sum.Functions {
				res.Functions = append(res.Functions, fn.Name)
				if !named[baseName(fn.Name)] {
					res.Extra = append(res.Extra, fn.Name)
				}
			}
		}
	}
	live, err := r.live(p, f, orig, fixed, out, id, &res)
	if f.Expect == "refuse" {
		if err != nil {
			return fail("built a patch that must be refused (%s); live: %v", f.Reason, err)
		}
		return fail("built a patch that must be refused (%s); live: %s", f.Reason, live)
	}
	if err != nil {
		return fail("%v", err)
	}
	res.Outcome, res.Correct, res.Detail = Patched, true, live
	return res
}

// live runs the live check of a built patch and describes it.
func (r *Runner) live(p *Project, f Fix, orig, fixed target, patchFile, id string, res *Result) (string, error) {
	loadArg := p.loadArg()
	// The fixed build's answers, from a process of its own.
	fs, err := r.start(p, fixed)
	if err != nil {
		return "", fmt.Errorf("start fixed build: %w", err)
	}
	bf, pf, err := twoAnswers(fs, loadArg, f.Probe)
	fs.Stop()
	if err != nil {
		return "", fmt.Errorf("fixed build: %w", err)
	}
	s, err := r.start(p, orig)
	if err != nil {
		return "", fmt.Errorf("start original: %w", err)
	}
	defer s.Stop()
	bo, po, err := twoAnswers(s, loadArg, f.Probe)
	if err != nil {
		return "", fmt.Errorf("original: %w", err)
	}
	if bo != bf {
		return "", fmt.Errorf("the load request %q answers %q on the original and %q on the fixed build", loadArg, bo, bf)
	}
	load := StartLoad(s, r.Workers, loadArg, bo)
	time.Sleep(300 * time.Millisecond)
	pid := strconv.Itoa(s.Cmd.Process.Pid)
	js, aerr := r.hotpatch(time.Minute, "apply", "--pid", pid, "--trust", r.Pub, "--json", "--timeout", "5s", patchFile)
	var ap struct {
		Processes []struct {
			Result   string `json:"result"`
			Error    string `json:"error"`
			PausedUS int64  `json:"paused_us"`
		} `json:"processes"`
	}
	if json.Unmarshal([]byte(js), &ap) == nil && len(ap.Processes) == 1 {
		res.PauseUS = ap.Processes[0].PausedUS
	}
	time.Sleep(300 * time.Millisecond)
	p1, perr1 := probe(s, f.Probe)
	var rerr error
	if aerr == nil {
		_, rerr = r.hotpatch(time.Minute, "revert", "--pid", pid, id)
	}
	time.Sleep(300 * time.Millisecond)
	p2, perr2 := probe(s, f.Probe)
	time.Sleep(200 * time.Millisecond)
	load.Stop()
	res.Requests = load.OK.Load() + load.Failed.Load()
	var problems []string
	if aerr != nil {
		problems = append(problems, "apply: "+aerr.Error())
	}
	if rerr != nil {
		problems = append(problems, "revert: "+rerr.Error())
	}
	if n := load.Failed.Load(); n > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d load requests failed (first: %s)", n, res.Requests, load.FirstFailure()))
	}
	if !s.Alive() {
		problems = append(problems, "the process died: "+s.ExitState())
	}
	if perr1 != nil || perr2 != nil {
		problems = append(problems, fmt.Sprintf("probe after apply: %v; after revert: %v", perr1, perr2))
	}
	facts := fmt.Sprintf("probe %q: original %q, fixed build %q; live after apply %q, after revert %q; %d load requests",
		f.Probe, po, pf, p1, p2, res.Requests)
	if po == pf {
		if f.Expect == "patch" {
			problems = append(problems, "the probe does not tell the builds apart")
		}
	} else {
		if aerr == nil && p1 != pf {
			if p1 == po {
				problems = append(problems, "applied but the probe still shows the vulnerable answer (a silent no-op)")
			} else {
				problems = append(problems, "after apply the probe answers neither as the original nor as the fixed build")
			}
		}
		if rerr == nil && aerr == nil && p2 != po {
			problems = append(problems, "after revert the probe does not answer as the original")
		}
	}
	if len(problems) > 0 {
		return "", fmt.Errorf("%s (%s)", strings.Join(problems, "; "), facts)
	}
	if f.Expect == "refuse" {
		return "applied and reverted with no failed request; " + facts, nil
	}
	return facts, nil
}

func twoAnswers(s *Service, loadArg, probeArg string) (string, string, error) {
	c, err := s.Dial()
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	b, err := c.Do("B", loadArg)
	if err != nil {
		return "", "", fmt.Errorf("load request: %w", err)
	}
	p, err := c.Do("P", probeArg)
	if err != nil {
		return "", "", fmt.Errorf("probe: %w", err)
	}
	return b, p, nil
}

func probe(s *Service, arg string) (string, error) {
	c, err := s.Dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.Do("P", arg)
}

// baseName is a function's name without gcc's clone suffixes (.part.0,
// .constprop.1, .isra.0, .cold) or a manifest's comment ("read_opts (start-up)").
func baseName(n string) string {
	if i := strings.IndexAny(n, " ."); i > 0 {
		return n[:i]
	}
	return n
}
