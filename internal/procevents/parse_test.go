package procevents

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// nlmsg encodes a netlink message, padded to 4 bytes.
func nlmsg(typ uint16, payload []byte) []byte {
	b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(payload)+3)
	ne.PutUint32(b[0:4], uint32(nlmsgHdrLen+len(payload)))
	ne.PutUint16(b[4:6], typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// cnmsg encodes a connector message.
func cnmsg(idx, val, ack uint32, data []byte) []byte {
	b := make([]byte, cnMsgLen, cnMsgLen+len(data))
	ne.PutUint32(b[0:4], idx)
	ne.PutUint32(b[4:8], val)
	ne.PutUint32(b[12:16], ack)
	ne.PutUint16(b[16:18], uint16(len(data)))
	return append(b, data...)
}

// procEvent encodes a proc_event with the given union fields, padded to
// the kernel's 40 bytes unless short.
func procEvent(what uint32, ts uint64, short bool, fields ...uint32) []byte {
	b := make([]byte, procEventHdrLen, 40)
	ne.PutUint32(b[0:4], what)
	ne.PutUint64(b[8:16], ts)
	for _, f := range fields {
		b = ne.AppendUint32(b, f)
	}
	for !short && len(b) < 40 {
		b = append(b, 0)
	}
	return b
}

// datagram encodes process connector messages as the kernel sends them.
func datagram(events ...[]byte) []byte {
	var b []byte
	for _, e := range events {
		b = append(b, nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, 0, e))...)
	}
	return b
}

var (
	forkEv = procEvent(procEventFork, 1000, false, 100, 101, 200, 200)
	execEv = procEvent(procEventExec, 2000, false, 200, 200)
	// Killed by SIGSEGV (11) with a core dump (0x80); parent 100/101.
	exitEv = procEvent(procEventExit, 3000, false, 200, 200, 0x8b, 17, 101, 100)
)

func TestParse(t *testing.T) {
	t.Parallel()
	fork := Event{Kind: Fork, PID: 200, TGID: 200, ParentPID: 100, ParentTGID: 101, Time: 1000}
	exec := Event{Kind: Exec, PID: 200, TGID: 200, Time: 2000}
	exit := Event{Kind: Exit, PID: 200, TGID: 200, ParentPID: 101, ParentTGID: 100, ExitCode: 0x8b, ExitSignal: 17, Time: 3000}
	tests := []struct {
		name string
		in   []byte
		want []Event
	}{
		{"fork", datagram(forkEv), []Event{fork}},
		{"exec", datagram(execEv), []Event{exec}},
		{"exit", datagram(exitEv), []Event{exit}},
		{"three in one datagram", datagram(forkEv, execEv, exitEv), []Event{fork, exec, exit}},
		{"exit before 4.18 has no parent", datagram(procEvent(procEventExit, 3000, true, 200, 200, 0x8b, 17)),
			[]Event{{Kind: Exit, PID: 200, TGID: 200, ExitCode: 0x8b, ExitSignal: 17, Time: 3000}}},
		{"thread exit", datagram(procEvent(procEventExit, 5, false, 201, 200, 0, 0xffffffff)),
			[]Event{{Kind: Exit, PID: 201, TGID: 200, ExitSignal: 0xffffffff, Time: 5}}},
		{"ack skipped", datagram(procEvent(procEventNone, 1, false, 0)), nil},
		{"uid change skipped", datagram(procEvent(0x4, 1, false, 200, 200, 0, 0), execEv), []Event{exec}},
		{"other connector skipped", append(nlmsg(nlmsgDone, cnmsg(cnIdxProc+1, 1, 0, []byte{1, 2, 3})), datagram(execEv)...), []Event{exec}},
		{"noop skipped", append(nlmsg(nlmsgNoop, nil), datagram(execEv)...), []Event{exec}},
		{"empty", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.in, nil)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	valid := datagram(execEv)
	lenField := func(b []byte, n uint32) []byte {
		b = bytes.Clone(b)
		ne.PutUint32(b[0:4], n)
		return b
	}
	cnLen := func(n uint16) []byte {
		b := bytes.Clone(valid)
		ne.PutUint16(b[nlmsgHdrLen+16:], n)
		return b
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"short header", valid[:10]},
		{"length below header", lenField(valid, 8)},
		{"length beyond datagram", lenField(valid, uint32(len(valid)+4))},
		{"truncated datagram", valid[:len(valid)-8]},
		{"short connector header", nlmsg(nlmsgDone, make([]byte, 12))},
		{"connector length beyond message", cnLen(60)},
		{"short process event", datagram(procEvent(procEventExec, 1, true))},
		{"short fork", datagram(procEvent(procEventFork, 1, true, 1, 2, 3))},
		{"short exec", datagram(procEvent(procEventExec, 1, true, 1))},
		{"short exit", datagram(procEvent(procEventExit, 1, true, 1, 2, 3))},
		{"netlink error", nlmsg(nlmsgError, []byte{0xff, 0xff, 0xff, 0xff})},
		{"unknown netlink type", nlmsg(42, cnmsg(cnIdxProc, cnValProc, 0, execEv))},
		{"garbage after a good message", append(bytes.Clone(valid), 1, 2, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := parse(tt.in, nil); err == nil {
				t.Errorf("parse succeeded with %v, want an error", got)
			}
		})
	}
}

func TestSubscription(t *testing.T) {
	t.Parallel()
	b := subscription(procCnMcastListen, 41, 7)
	var got []message
	if err := messages(b, func(m message) { got = append(got, m) }); err == nil {
		t.Fatalf("a 4-byte subscription parsed as a process event: %v", got)
	}
	if n := ne.Uint32(b[0:4]); int(n) != len(b) {
		t.Errorf("nlmsg_len = %d, want %d", n, len(b))
	}
	want := []byte{1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 41, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0}
	if diff := cmp.Diff(want, b[nlmsgHdrLen:]); diff != "" {
		t.Errorf("cn_msg (-want +got):\n%s", diff)
	}
}

func TestExitStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		ev         Event
		sig        syscall.Signal
		core       bool
		status     int
		exitedNorm bool
	}{
		{"exit 0", Event{Kind: Exit}, 0, false, 0, true},
		{"exit 3", Event{Kind: Exit, ExitCode: 3 << 8}, 0, false, 3, true},
		{"SIGSEGV", Event{Kind: Exit, ExitCode: 11}, syscall.SIGSEGV, false, 0, false},
		{"SIGABRT core", Event{Kind: Exit, ExitCode: 0x80 | 6}, syscall.SIGABRT, true, 0, false},
		{"SIGKILL", Event{Kind: Exit, ExitCode: 9}, syscall.SIGKILL, false, 0, false},
		{"not an exit", Event{Kind: Exec, ExitCode: 11}, 0, false, 0, false},
	}
	for _, tt := range tests {
		sig, core := tt.ev.Signal()
		status, ok := tt.ev.ExitStatus()
		if sig != tt.sig || core != tt.core || status != tt.status || ok != tt.exitedNorm {
			t.Errorf("%s: Signal() = %v, %t; ExitStatus() = %d, %t; want %v, %t; %d, %t",
				tt.name, sig, core, status, ok, tt.sig, tt.core, tt.status, tt.exitedNorm)
		}
	}
}

// FuzzParse feeds datagrams to the parser: it must never panic, and what
// it returns must be well formed.
func FuzzParse(f *testing.F) {
	f.Add(datagram(forkEv, execEv, exitEv))
	f.Add(datagram(procEvent(procEventExit, 3000, true, 200, 200, 0x8b, 17)))
	f.Add(append(nlmsg(nlmsgNoop, nil), nlmsg(nlmsgDone, cnmsg(2, 1, 0, []byte{1}))...))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := parse(b, nil)
		if max := len(b) / (nlmsgHdrLen + cnMsgLen + procEventHdrLen + 8); len(evs) > max {
			t.Fatalf("%d events from %d bytes, at most %d possible", len(evs), len(b), max)
		}
		for _, e := range evs {
			if e.Kind < Fork || e.Kind > Exit {
				t.Fatalf("bad event %+v", e)
			}
		}
		again, err2 := parse(b, nil)
		if (err == nil) != (err2 == nil) || !cmp.Equal(evs, again) {
			t.Fatalf("parse is not deterministic")
		}
	})
}

// TestParseKernelDatagrams decodes datagrams recorded from Linux 6.18 (the
// real-* seeds of FuzzParse): the acknowledgement of a subscription, and
// the fork, exec and exit of `sh -c 'kill -SEGV $$'`.
func TestParseKernelDatagrams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file string
		want []Event
	}{
		{"real-ack", nil},
		{"real-fork", []Event{{Kind: Fork, PID: 19259, TGID: 19259, ParentPID: 19254, ParentTGID: 19254, Time: 2673397497231}}},
		{"real-exec", []Event{{Kind: Exec, PID: 19259, TGID: 19259, Time: 2673397765707}}},
		{"real-exit-sigsegv", []Event{{Kind: Exit, PID: 19259, TGID: 19259, ParentPID: 19254, ParentTGID: 19254, ExitCode: 11, ExitSignal: 17, Time: 2673399045832}}},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzParse", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		_, quoted, _ := strings.Cut(strings.TrimSpace(string(b)), "[]byte(")
		raw, err := strconv.Unquote(strings.TrimSuffix(quoted, ")"))
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		got, err := parse([]byte(raw), nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.file, diff)
		}
	}
}
