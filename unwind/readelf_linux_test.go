package unwind

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestRowsMatchReadelf checks every row of the call frame tables of real
// files against binutils' own interpretation (readelf
// --debug-dump=frames-interp): glibc, the dynamic linker and test programs
// with .eh_frame and with .debug_frame.
func TestRowsMatchReadelf(t *testing.T) {
	if _, err := exec.LookPath("readelf"); err != nil {
		t.Skip("readelf is not installed")
	}
	files := map[string]string{
		"libc":  "/lib/x86_64-linux-gnu/libc.so.6",
		"ld.so": "/lib64/ld-linux-x86-64.so.2",
	}
	if _, err := exec.LookPath("gcc"); err == nil {
		for _, v := range variants {
			files["threads-"+v.name] = build(t, "threads", append([]string{"-pthread"}, v.flags...)...)
		}
	}
	for name, path := range files {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f, err := elf.Open(path)
			if err != nil {
				t.Skip(err)
			}
			defer f.Close()
			tab, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			// readelf exits with 1 after warnings about other sections.
			out, err := exec.Command("readelf", "--debug-dump=frames-interp", path).Output()
			if len(out) == 0 {
				t.Fatalf("readelf: %v", err)
			}
			rows := compareReadelf(t, tab, out)
			if rows == 0 {
				t.Fatal("readelf printed no rows")
			}
			t.Logf("%d rows match", rows)
		})
	}
}

var (
	reSection = regexp.MustCompile(`^Contents of the (\.\w+) section`)
	reFDE     = regexp.MustCompile(`FDE cie=[0-9a-f]+ pc=([0-9a-f]+)\.\.([0-9a-f]+)`)
	reRow     = regexp.MustCompile(`^([0-9a-f]{16}) +(\S+) *(.*)$`)
	reCell    = regexp.MustCompile(`r\d+ \(\w+\)|\S+`)
	reCFA     = regexp.MustCompile(`^(\w+)([+-]\d+)$`)
)

func regIndex(name string) int {
	for i, n := range dwarfNames {
		if n == name {
			return i
		}
	}
	return -1
}

// readelfCell writes a rule the way readelf's frames-interp does.
func readelfCell(r rule) string {
	switch r.kind {
	case ruleUnspecified, ruleUndefined:
		return "u"
	case ruleSameValue:
		return "s"
	case ruleOffset:
		return fmt.Sprintf("c%+d", r.off)
	case ruleValOffset:
		return fmt.Sprintf("v%+d", r.off)
	case ruleRegister:
		name := dwarfNames[r.reg]
		if r.reg == regRA {
			name = "rip"
		}
		return fmt.Sprintf("r%d (%s)", r.reg, name)
	case ruleExpression:
		return "exp"
	case ruleValExpression:
		return "vexp"
	}
	return "?"
}

func compareReadelf(t *testing.T, tab *Table, out []byte) int {
	t.Helper()
	var sec string
	var begin, end uint64
	var cols []int
	rows, bad := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := reSection.FindStringSubmatch(line); m != nil {
			sec = m[1]
			continue
		}
		if strings.Contains(line, " CIE") {
			begin, end = 0, 0 // the rows of a CIE: not looked up
			continue
		}
		if m := reFDE.FindStringSubmatch(line); m != nil {
			begin, _ = strconv.ParseUint(m[1], 16, 64)
			end, _ = strconv.ParseUint(m[2], 16, 64)
			cols = nil
			continue
		}
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "LOC" && f[1] == "CFA" {
			cols = cols[:0]
			for _, name := range f[2:] {
				cols = append(cols, regIndex(name))
			}
			continue
		}
		m := reRow.FindStringSubmatch(line)
		if m == nil || begin == end {
			continue
		}
		loc, _ := strconv.ParseUint(m[1], 16, 64)
		var fd fde
		var ok bool
		var err error
		if sec == ".debug_frame" {
			fd, ok, err = tab.findDebug(loc)
		} else {
			fd, ok, err = tab.findEh(loc)
		}
		if err != nil || !ok || fd.begin != begin || fd.end != end {
			t.Errorf("%s: pc %#x: FDE [%#x,%#x) %v %v, readelf says [%#x,%#x)", sec, loc, fd.begin, fd.end, ok, err, begin, end)
			bad++
			continue
		}
		r := fd.cie.initial
		p := program{sec: fd.sec, cie: fd.cie, initial: &fd.cie.initial}
		b := fd.instr
		if err := p.run(&b, &r, fd.begin, loc, &scratch{}, true); err != nil {
			t.Errorf("%s: pc %#x: %v", sec, loc, err)
			bad++
			continue
		}
		var got []string
		switch r.cfa.kind {
		case cfaRegOffset:
			got = append(got, fmt.Sprintf("%s%+d", dwarfNames[r.cfa.reg], r.cfa.off))
		case cfaExpression:
			got = append(got, "exp")
		default:
			got = append(got, "?")
		}
		want := []string{m[2]}
		if c := reCFA.FindStringSubmatch(m[2]); c != nil && c[2] == "+0" {
			want[0] = c[1] + "+0"
		}
		cells := reCell.FindAllString(m[3], -1)
		for i, reg := range cols {
			if reg < 0 || i >= len(cells) {
				continue // a register the unwinder does not track
			}
			got = append(got, dwarfNames[reg]+"="+readelfCell(r.regs[reg]))
			want = append(want, dwarfNames[reg]+"="+cells[i])
		}
		if diff := cmpDiff(want, got); diff != "" {
			t.Errorf("%s: row at %#x (-readelf +ours):\n%s", sec, loc, diff)
			bad++
		}
		if bad > 20 {
			t.Fatal("too many differences")
		}
		rows++
	}
	return rows
}
