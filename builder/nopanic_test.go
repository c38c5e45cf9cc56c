package builder

import (
	"debug/elf"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

// corpusBuilds builds both variants of every fixture under a few flag sets
// and returns the target modules, executables and libraries apart.
var corpusBuilds = sync.OnceValues(func() (map[string][]string, error) {
	names, err := fixture.Names()
	if err != nil {
		return nil, err
	}
	flags := []fixture.Flags{{Opt: "-O2"}, {Opt: "-O0"}, {Opt: "-O2", NoPIE: true}, {Opt: "-O3", Debug: true}}
	out := map[string][]string{}
	for _, name := range names {
		fx, err := fixture.Load(name)
		if err != nil {
			return nil, err
		}
		for _, fl := range flags {
			if fl.NoPIE && fx.Spec.Target == fixture.TargetLib {
				continue
			}
			f := fx.DefaultFlags()
			f.Opt, f.NoPIE, f.Debug = fl.Opt, fl.NoPIE, fl.Debug
			for _, v := range []fixture.Variant{fixture.Orig, fixture.Fixed} {
				b, err := fx.Build(v, f)
				if err != nil {
					return nil, err
				}
				out[fx.Spec.Target] = append(out[fx.Spec.Target], b.Target)
			}
		}
	}
	return out, nil
})

// buildNoPanic runs Build on a pair of valid ELF files, which must give a
// patch that validates, or an error: never a panic (there is no recover
// here, so a panic fails the test with its stack).
func buildNoPanic(t *testing.T, orig, fixed string) {
	t.Helper()
	p, err := Build(orig, fixed, Options{ID: "pair"})
	if err != nil {
		if p != nil {
			t.Errorf("%s -> %s: both a patch and an error (%v)", orig, fixed, err)
		}
		return
	}
	if err := p.Validate(); err != nil {
		t.Errorf("%s -> %s: patch does not validate: %v", orig, fixed, err)
	}
}

// TestNoPanicPairs is a property test over real gcc builds: every fixture
// paired with itself at other flags, and a fixed pseudo-random sample of
// unrelated pairs (another program, another -O level, PIE against not),
// must give a patch or an error.
func TestNoPanicPairs(t *testing.T) {
	builds, err := corpusBuilds()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 2026))
	for _, kind := range []string{fixture.TargetExec, fixture.TargetLib} {
		list := builds[kind]
		n := len(list) * 4
		if testing.Short() {
			n = len(list)
		}
		for i := 0; i < n; i++ {
			a, b := list[rng.IntN(len(list))], list[rng.IntN(len(list))]
			buildNoPanic(t, a, b)
		}
		// Neighbours in the list are the same fixture at other variants or
		// flags: the pairs most likely to look alike.
		for i := 0; i+1 < len(list); i++ {
			buildNoPanic(t, list[i], list[i+1])
			buildNoPanic(t, list[i+1], list[i])
		}
	}
}

// FuzzBuildPairs picks pairs of real builds by index; `go test -fuzz
// FuzzBuildPairs ./builder` explores beyond the seeds.
func FuzzBuildPairs(f *testing.F) {
	for _, s := range [][2]uint16{{0, 1}, {1, 0}, {2, 9}, {7, 40}, {3, 3}, {100, 5}} {
		f.Add(s[0], s[1], false)
	}
	f.Add(uint16(0), uint16(1), true)
	f.Fuzz(func(t *testing.T, i, j uint16, lib bool) {
		builds, err := corpusBuilds()
		if err != nil {
			t.Fatal(err)
		}
		list := builds[fixture.TargetExec]
		if lib {
			list = builds[fixture.TargetLib]
		}
		buildNoPanic(t, list[int(i)%len(list)], list[int(j)%len(list)])
	})
}

// TestExtentStopsAtRelocatedField: a chunk that looks like a string without
// its NUL (a label cut it) is extended to the end of the string, but never
// into a relocated field or across a symbol; and sameFields never slices
// past a range when a field straddles its end (this panicked with "slice
// bounds out of range").
func TestExtentStopsAtRelocatedField(t *testing.T) {
	data := []byte("hello\x00abc" + "\x10\x20\x40\x00\x00\x00\x00\x00" + "tail\x00")
	sec := &section{name: ".rodata", addr: 0x1000, size: uint64(len(data)), kind: secROData, data: data}
	m := &module{
		sections: []*section{sec},
		labels:   []uint64{0x1000, 0x1006, 0x1009, 0x1011, 0x1000 + uint64(len(data))},
		hard:     []uint64{0x1000, 0x1011, 0x1000 + uint64(len(data))},
		relocs:   []reloc{{off: 0x1009, typ: elf.R_X86_64_64, addend: 0x1000}},
	}
	// "abc" is cut by the pointer's label: it must not run into the pointer.
	if s, e := m.extent(0x1006); s != 0x1006 || e != 0x1009 {
		t.Errorf("extent(abc) = [%#x, %#x), want [0x1006, 0x1009)", s, e)
	}
	// A label in the middle of the pointer: the chunk ends after the field.
	m.labels = []uint64{0x1000, 0x1006, 0x100b, 0x1011}
	if s, e := m.extent(0x1006); s != 0x1006 || e != 0x1011 {
		t.Errorf("extent(abc, label inside the pointer) = [%#x, %#x), want [0x1006, 0x1011)", s, e)
	}
	b := &builder{orig: m, fixed: m, corr: map[*symbol]*symbol{}}
	f := []field{{off: 3, typ: patch.Abs64, target: 0x1000}}
	if same, err := b.sameFields(data[6:11], data[6:11], f, f, "straddling"); !same || err != nil {
		t.Errorf("sameFields on a field that straddles the end = %v, %v; want true", same, err)
	}
}
