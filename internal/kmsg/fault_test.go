package kmsg

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func usec(n int64) time.Duration { return time.Duration(n) * time.Microsecond }

func TestParseLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		line string
		want Fault
	}{
		{
			"segfault, Linux 6.18",
			"6,340,2443106072,-;seg[17371]: segfault at 10 ip 0000558e55f25132 sp 00007ffc95b161c0 error 6 in seg[1132,558e55f25000+1000] likely on CPU 0 (core 0, socket 0)\n",
			Fault{PID: 17371, Comm: "seg", Kind: "segfault", Addr: 0x10, IP: 0x558e55f25132, SP: 0x7ffc95b161c0, Time: usec(2443106072)},
		},
		{
			"segfault, older kernel without the CPU",
			"6,1204,5000000,-;nginx[4242]: segfault at 0 ip 00007f1c2a3b4c5d sp 00007ffd6b0a6e50 error 4 in libc.so.6[7f1c2a300000+1b0000]",
			Fault{PID: 4242, Comm: "nginx", Kind: "segfault", IP: 0x7f1c2a3b4c5d, SP: 0x7ffd6b0a6e50, Time: 5 * time.Second},
		},
		{
			"segfault in anonymous memory, no file",
			"6,13,1,-;jit[77]: segfault at deadbeef ip 00007f0000001000 sp 00007ffd00000000 error 15 likely on CPU 1 (core 1, socket 0)",
			Fault{PID: 77, Comm: "jit", Kind: "segfault", Addr: 0xdeadbeef, IP: 0x7f0000001000, SP: 0x7ffd00000000, Time: usec(1)},
		},
		{
			"segfault of pid 1 at KERN_EMERG, with a caller id and dictionary",
			"0,14,2,-,caller=T1;init[1]: segfault at ffffffff81000000 ip 000055a04c0b8134 sp 00007ffc49930950 error 7 in init[1134,55a04c0b8000+1000]\n SUBSYSTEM=x\n",
			Fault{PID: 1, Comm: "init", Kind: "segfault", Addr: 0xffffffff81000000, IP: 0x55a04c0b8134, SP: 0x7ffc49930950, Time: usec(2)},
		},
		{
			"general protection fault",
			"6,344,2443111661,-;traps: gp[17374] general protection fault ip:559f54aa512d sp:7ffce3f682a0 error:0 in gp[112d,559f54aa5000+1000]",
			Fault{PID: 17374, Comm: "gp", Kind: "general protection fault", IP: 0x559f54aa512d, SP: 0x7ffce3f682a0, Time: usec(2443111661)},
		},
		{
			"int3",
			"6,342,2443107939,-;traps: int3[17372] trap int3 ip:561b5271d12e sp:7fffadf6c870 error:0 in int3[112e,561b5271d000+1000]",
			Fault{PID: 17372, Comm: "int3", Kind: "trap int3", IP: 0x561b5271d12e, SP: 0x7fffadf6c870, Time: usec(2443107939)},
		},
		{
			"invalid opcode",
			"6,343,2443109904,-;traps: ud2[17373] trap invalid opcode ip:55a2bdd1712d sp:7ffe406785f0 error:0 in ud2[112d,55a2bdd17000+1000]",
			Fault{PID: 17373, Comm: "ud2", Kind: "trap invalid opcode", IP: 0x55a2bdd1712d, SP: 0x7ffe406785f0, Time: usec(2443109904)},
		},
		{
			"divide error",
			"6,347,2452610281,-;traps: div[17425] trap divide error ip:56222cea512f sp:7fffa7239d80 error:0 in div[112f,56222cea5000+1000]",
			Fault{PID: 17425, Comm: "div", Kind: "trap divide error", IP: 0x56222cea512f, SP: 0x7fffa7239d80, Time: usec(2452610281)},
		},
		{
			"control protection",
			"0,20,3,-;traps: cet[99] control protection ip:401136 sp:7ffe2a3b4000 ssp:7f0a00fff000 error:1(near ret) in cet[1136,400000+1000]",
			Fault{PID: 99, Comm: "cet", Kind: "control protection", IP: 0x401136, SP: 0x7ffe2a3b4000, Time: usec(3)},
		},
		{
			"bad signal frame",
			"6,21,4,-;sig[55] bad frame in rt_sigreturn frame:00000000b1a2c3d4 ip:401000 sp:7ffc00001000 orax:ffffffffffffffff in sig[401000+1000]",
			Fault{PID: 55, Comm: "sig", Kind: "bad frame in rt_sigreturn", IP: 0x401000, SP: 0x7ffc00001000, Time: usec(4)},
		},
		{
			"escaped name",
			`6,348,2452613221,-;a\x5cb\x0ac\x01[9]:[17426]: segfault at 10 ip 0000559e22e7215b sp 00007ffee39c20a0 error 6 in ctl[115b,559e22e72000+1000] likely on CPU 1 (core 1, socket 0)`,
			Fault{PID: 17426, Comm: "a\\b\nc\x01[9]:", Kind: "segfault", Addr: 0x10, IP: 0x559e22e7215b, SP: 0x7ffee39c20a0, Time: usec(2452613221)},
		},
		{
			"brackets in the name",
			"6,345,2443120106,-;we ird]:x[17378]: segfault at 10 ip 0000565202f5d132 sp 00007ffde6953ff0 error 6 in we ird]:x[1132,565202f5d000+1000] likely on CPU 1 (core 1, socket 0)",
			Fault{PID: 17378, Comm: "we ird]:x", Kind: "segfault", Addr: 0x10, IP: 0x565202f5d132, SP: 0x7ffde6953ff0, Time: usec(2443120106)},
		},
		{
			"forged report in the name",
			"6,30,5,-;traps: x[1] trap int3 [4242] trap int3 ip:1000 sp:2000 error:0",
			Fault{PID: 4242, Comm: "x[1] trap int3 ", Kind: "trap int3", IP: 0x1000, SP: 0x2000, Time: usec(5)},
		},
		{
			"forged report in the file name",
			"6,31,6,-;evil[500]: segfault at 0 ip 1 sp 2 error 4 in [1]: segfault at 5 ip 5 sp 5 error 5[0+1000]",
			Fault{PID: 500, Comm: "evil", Kind: "segfault", IP: 1, SP: 2, Time: usec(6)},
		},
		{
			"empty name",
			"6,32,7,-;[12]: segfault at 8 ip 1 sp 2 error 4",
			Fault{PID: 12, Kind: "segfault", Addr: 8, IP: 1, SP: 2, Time: usec(7)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseLine(tt.line)
			if !ok {
				t.Fatalf("ParseLine(%q) = false", tt.line)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseLine (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseLineRejects(t *testing.T) {
	t.Parallel()
	for _, line := range []string{
		"",
		"hello",
		"seg[12]: segfault at 0 ip 0 sp 0 error 6", // no header
		"6,349,2452613234,-;Code: 0f 1e fa e9 77 ff ff ff 55 48 89 e5 48 8d 05 c0 0e 00 00 <c7> 00 01 00 00 00",
		"14,50,7,-;seg[12]: segfault at 0 ip 0 sp 0 error 6",               // facility 1: written from user space
		"6,1,2;seg[12]: segfault at 0 ip 0 sp 0 error 6",                   // no flags
		"x,1,2,-;seg[12]: segfault at 0 ip 0 sp 0 error 6",                 // bad priority
		"6,1,-2,-;seg[12]: segfault at 0 ip 0 sp 0 error 6",                // bad time
		"6,1,99999999999999999,-;seg[12]: segfault at 0 ip 0 sp 0 error 6", // time overflows
		"6,1,2,-;seg[0]: segfault at 0 ip 0 sp 0 error 6",                  // pid 0
		"6,1,2,-;seg[99999999999]: segfault at 0 ip 0 sp 0 error 6",        // pid too large
		"6,1,2,-;seg[12]: segfault at 10 ip 0000558e55f25132 sp",           // cut short
		"6,1,2,-;seg[12]: segfault at 0 ip 0 sp 0 error",
		"6,1,2,-;seg[12]: segfault at 0 ip 0 sp 0 error 6x",
		"6,1,2,-;seg[12]: segfault at 10000000000000000 ip 0 sp 0 error 6", // 17 digits
		"6,1,2,-;seg[12]: segfault at 0x10 ip 0 sp 0 error 6",
		"6,1,2,-;abcdefghijklmnop[12]: segfault at 0 ip 0 sp 0 error 6", // a 16-byte name
		"4,51,8,-;umip: prog[12] ip:401000 sp:7ffc00001000: SGDT instruction cannot be used by applications.",
		"6,52,9,-;traps: x[12] ip:1 sp:2 error:0",           // no kind
		"6,53,9,-;traps: x[12] Trap int3 ip:1 sp:2 error:0", // not the kernel's words
		"6,54,9,-;traps: x[12] trap int3 ip:1 sp:",          // cut short
		"6,55,9,-;traps: x[12] trap int3 ip:1 sp:2:",        // trailing junk
		"6,56,9,-;sig[5] bad frame in rt_sigreturn frame:zz ip:1 sp:2",
		"6,57,9,-;prog[12] vsyscall attempted with vsyscall=none ip:ffffffffff600000 cs:33 sp:7ffc ax:0 si:0 di:0",
		"6,58,9,-;potentially unexpected fatal signal 11.",
		"6,60,9,-;[1] k ip:0 sp:0[12] trap int3 ip:1 sp:2x", // a 15-byte forged name, the real report broken
	} {
		if f, ok := ParseLine(line); ok {
			t.Errorf("ParseLine(%q) = %+v, want false", line, f)
		}
	}
}

// escape escapes like /dev/kmsg.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f || c == '\\' {
			fmt.Fprintf(&b, `\x%02x`, c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// render writes f as the kernel would.
func render(f Fault) string {
	t := int64(f.Time / time.Microsecond)
	if f.Kind == "segfault" {
		return fmt.Sprintf("6,1,%d,-;%s[%d]: segfault at %x ip %016x sp %016x error 6 in x[1000+1000] likely on CPU 0 (core 0, socket 0)",
			t, escape(f.Comm), f.PID, f.Addr, f.IP, f.SP)
	}
	return fmt.Sprintf("6,1,%d,-;traps: %s[%d] %s ip:%x sp:%x error:0 in x[0,1000+1000]", t, escape(f.Comm), f.PID, f.Kind, f.IP, f.SP)
}

// FuzzParseLine feeds records to ParseLine: it must never panic, what it
// returns must be well formed, and written back the kernel's way it must
// parse to the same fault.
func FuzzParseLine(f *testing.F) {
	f.Add("6,340,2443106072,-;seg[17371]: segfault at 10 ip 0000558e55f25132 sp 00007ffc95b161c0 error 6 in seg[1132,558e55f25000+1000] likely on CPU 0 (core 0, socket 0)\n")
	f.Add("6,342,2443107939,-;traps: int3[17372] trap int3 ip:561b5271d12e sp:7fffadf6c870 error:0 in int3[112e,561b5271d000+1000]")
	f.Add("6,21,4,-;sig[55] bad frame in rt_sigreturn frame:00000000b1a2c3d4 ip:401000 sp:7ffc00001000 orax:ffffffffffffffff")
	f.Fuzz(func(t *testing.T, line string) {
		got, ok := ParseLine(line)
		if !ok {
			if got != (Fault{}) {
				t.Fatalf("ParseLine(%q) = %+v, false", line, got)
			}
			return
		}
		if got.PID <= 0 || len(got.Comm) > maxComm || !validKind(got.Kind) || got.Time < 0 ||
			got.Kind != "segfault" && got.Addr != 0 {
			t.Fatalf("ParseLine(%q) = %+v: malformed", line, got)
		}
		again, ok := ParseLine(render(got))
		if !ok {
			t.Fatalf("ParseLine(%q) = %+v, but not its rendering %q", line, got, render(got))
		}
		if diff := cmp.Diff(got, again); diff != "" {
			t.Fatalf("ParseLine(%q) then rendered %q (-first +second):\n%s", line, render(got), diff)
		}
	})
}
