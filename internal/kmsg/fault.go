package kmsg

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrNotSupported is returned by Open on platforms other than Linux.
var ErrNotSupported = errors.New("reading the kernel log is only supported on Linux")

// maxComm is the longest process name the kernel prints (TASK_COMM_LEN-1).
const maxComm = 15

// Fault is one fatal fault of a user process, as the kernel logged it.
type Fault struct {
	PID  int    // the faulting thread, as numbered in the initial PID namespace
	Comm string // its name (unescaped: any bytes but NUL)
	// Kind is "segfault", "general protection fault", "trap int3",
	// "trap invalid opcode", "trap divide error", "control protection",
	// "bad frame in rt_sigreturn", … (the kernel's words).
	Kind   string
	Addr   uint64        // the faulting address (segfault only; else 0)
	IP, SP uint64        // instruction and stack pointers at the fault
	Time   time.Duration // the record's timestamp, since boot
}

// ParseLine decodes one /dev/kmsg record ("PRIO,SEQ,USEC,FLAGS;MESSAGE",
// possibly followed by a newline and " KEY=VALUE" lines) and reports
// whether it is a fault report of a user process.
func ParseLine(line string) (Fault, bool) {
	hdr, msg, ok := strings.Cut(line, ";")
	if !ok {
		return Fault{}, false
	}
	msg, _, _ = strings.Cut(msg, "\n")
	fields := strings.Split(hdr, ",")
	if len(fields) < 4 {
		return Fault{}, false
	}
	prio, err := strconv.ParseUint(fields[0], 10, 32)
	if err != nil || prio>>3 != 0 { // facility 0: the kernel
		return Fault{}, false
	}
	if _, err := strconv.ParseUint(fields[1], 10, 64); err != nil {
		return Fault{}, false
	}
	usec, err := strconv.ParseUint(fields[2], 10, 64)
	if err != nil || usec > math.MaxInt64/uint64(time.Microsecond) {
		return Fault{}, false
	}
	msg = unescape(msg)
	f, ok := parseSegfault(msg)
	if !ok {
		f, ok = parseTrap(strings.TrimPrefix(msg, "traps: "))
	}
	if !ok {
		return Fault{}, false
	}
	f.Time = time.Duration(usec) * time.Microsecond
	return f, true
}

// parseSegfault matches "COMM[PID]: segfault at ADDR ip IP sp SP error CODE".
func parseSegfault(msg string) (Fault, bool) {
	for i := 0; i <= maxComm && i < len(msg); i++ {
		if msg[i] != '[' {
			continue
		}
		s := scanner{s: msg[i+1:], ok: true}
		pid := s.pid()
		s.lit("]: segfault at ")
		addr := s.hex()
		s.lit(" ip ")
		ip := s.hex()
		s.lit(" sp ")
		sp := s.hex()
		s.lit(" error ")
		s.hex()
		if s.end() {
			return Fault{PID: pid, Comm: msg[:i], Kind: "segfault", Addr: addr, IP: ip, SP: sp}, true
		}
	}
	return Fault{}, false
}

// parseTrap matches "COMM[PID] KIND ip:IP sp:SP", KIND possibly followed by
// " frame:P" (a bad signal frame).
func parseTrap(msg string) (Fault, bool) {
	for i := 0; i <= maxComm && i < len(msg); i++ {
		if msg[i] != '[' {
			continue
		}
		s := scanner{s: msg[i+1:], ok: true}
		pid := s.pid()
		s.lit("] ")
		if !s.ok {
			continue
		}
		kind, rest, found := strings.Cut(s.s, " ip:")
		if !found {
			continue
		}
		if k, frame, ok := strings.Cut(kind, " frame:"); ok {
			f := scanner{s: frame, ok: true}
			f.hex()
			if !f.ok || f.s != "" {
				continue
			}
			kind = k
		}
		if !validKind(kind) {
			continue
		}
		s.s = rest
		ip := s.hex()
		s.lit(" sp:")
		sp := s.hex()
		if s.end() {
			return Fault{PID: pid, Comm: msg[:i], Kind: kind, IP: ip, SP: sp}, true
		}
	}
	return Fault{}, false
}

// validKind reports whether k looks like the kernel's name of a fault:
// lower-case words of letters, digits, '_' and '/'.
func validKind(k string) bool {
	if k == "" || len(k) > 64 || k[0] == ' ' || k[len(k)-1] == ' ' || strings.Contains(k, "  ") {
		return false
	}
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == ' ', c == '_', c == '/':
		default:
			return false
		}
	}
	return true
}

// scanner matches a message against a fixed format, field by field; once
// a field fails, ok is false and stays so.
type scanner struct {
	s  string
	ok bool
}

func (s *scanner) lit(x string) {
	if s.ok && strings.HasPrefix(s.s, x) {
		s.s = s.s[len(x):]
	} else {
		s.ok = false
	}
}

// hex reads 1 to 16 hex digits.
func (s *scanner) hex() uint64 {
	n := 0
	for n < len(s.s) && n <= 16 && isHex(s.s[n]) {
		n++
	}
	if !s.ok || n == 0 || n > 16 {
		s.ok = false
		return 0
	}
	v, err := strconv.ParseUint(s.s[:n], 16, 64)
	if err != nil {
		s.ok = false
		return 0
	}
	s.s = s.s[n:]
	return v
}

// pid reads a positive decimal int32.
func (s *scanner) pid() int {
	n := 0
	for n < len(s.s) && n <= 10 && '0' <= s.s[n] && s.s[n] <= '9' {
		n++
	}
	if !s.ok || n == 0 || n > 10 {
		s.ok = false
		return 0
	}
	v, err := strconv.ParseInt(s.s[:n], 10, 32)
	if err != nil || v <= 0 {
		s.ok = false
		return 0
	}
	s.s = s.s[n:]
	return int(v)
}

// end reports whether the whole format matched and the message ends or
// goes on with a space.
func (s *scanner) end() bool {
	return s.ok && (s.s == "" || s.s[0] == ' ')
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// unescape undoes the kernel's \xHH escapes.
func unescape(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' && isHex(s[i+2]) && isHex(s[i+3]) {
			b.WriteByte(unhex(s[i+2])<<4 | unhex(s[i+3]))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
