package build

import (
	"fmt"
	"os"
	"testing"
)

func TestDebugBuild(t *testing.T) {
	o, f := os.Getenv("HP_ORIG"), os.Getenv("HP_FIXED")
	if o == "" {
		t.Skip()
	}
	p, err := Build(o, f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range p.Functions {
		fmt.Printf("func %+v\n", fn)
	}
	for _, ob := range p.Objects {
		fmt.Printf("obj %+v\n", ob)
	}
	for _, r := range p.Relocs {
		fmt.Printf("reloc %v %#x %v %+v %d\n", r.Section, r.Offset, r.Type, r.Target, r.Addend)
	}
	fmt.Printf("text %d rodata %d %q data %d bss %d\n", len(p.Text), len(p.ROData), p.ROData, len(p.Data), p.BSSSize)
}

func TestDebugRoundTrip(t *testing.T) {
	o, f := os.Getenv("HP_ORIG"), os.Getenv("HP_FIXED")
	if o == "" {
		t.Skip()
	}
	p, err := Build(o, f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(o, f, p); err != nil {
		t.Fatal(err)
	}
}
