package procevents

import (
	"encoding/binary"
	"fmt"
	"time"
)

// A datagram from the process connector holds one or more netlink messages
// (struct nlmsghdr, linux/netlink.h), each padded to 4 bytes and carrying a
// struct cn_msg (linux/connector.h) whose data is a struct proc_event
// (linux/cn_proc.h). All fields are in host byte order.
//
//	nlmsghdr  len u32, type u16, flags u16, seq u32, pid u32
//	cn_msg    idx u32, val u32, seq u32, ack u32, len u16, flags u16, data[len]
//	proc_event what u32, cpu u32, timestamp_ns u64, then by what:
//	  fork  parent_pid, parent_tgid, child_pid, child_tgid      (i32 each)
//	  exec  process_pid, process_tgid
//	  exit  process_pid, process_tgid, exit_code u32, exit_signal u32,
//	        parent_pid, parent_tgid (the last two since Linux 4.18)
//	  none  err u32 (the acknowledgement of a subscription)
const (
	nlmsgHdrLen     = 16
	cnMsgLen        = 20
	procEventHdrLen = 16

	nlmsgNoop  = 1
	nlmsgError = 2
	nlmsgDone  = 3

	cnIdxProc = 1
	cnValProc = 1

	procEventNone = 0x00000000
	procEventFork = 0x00000001
	procEventExec = 0x00000002
	procEventExit = 0x80000000

	procCnMcastListen = 1
	procCnMcastIgnore = 2
)

var ne = binary.NativeEndian

// message is one process connector message: the cn_msg ack field and the
// proc_event, its union as long as the kernel sent it.
type message struct {
	ack  uint32
	what uint32
	time uint64
	data []byte
}

// messages calls fn for each process connector message in datagram b, in
// order. It skips messages of other connector users and netlink no-ops,
// and returns an error for anything malformed (fn is not called for the
// malformed message nor after it).
func messages(b []byte, fn func(message)) error {
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return fmt.Errorf("%d trailing bytes, short of a netlink header", len(b))
		}
		n := ne.Uint32(b[0:4])
		typ := ne.Uint16(b[4:6])
		if n < nlmsgHdrLen || uint64(n) > uint64(len(b)) {
			return fmt.Errorf("netlink message length %d out of range (%d bytes left)", n, len(b))
		}
		payload := b[nlmsgHdrLen:n]
		if aligned := (uint64(n) + 3) &^ 3; aligned < uint64(len(b)) {
			b = b[aligned:]
		} else {
			b = nil
		}
		switch typ {
		case nlmsgNoop:
			continue
		case nlmsgError:
			if len(payload) >= 4 {
				return fmt.Errorf("netlink error message (errno %d)", -int32(ne.Uint32(payload)))
			}
			return fmt.Errorf("short netlink error message")
		case nlmsgDone:
		default:
			return fmt.Errorf("unexpected netlink message type %d", typ)
		}
		if len(payload) < cnMsgLen {
			return fmt.Errorf("connector message of %d bytes, short of its header", len(payload))
		}
		idx, val := ne.Uint32(payload[0:4]), ne.Uint32(payload[4:8])
		dlen := int(ne.Uint16(payload[16:18]))
		if cnMsgLen+dlen > len(payload) {
			return fmt.Errorf("connector data length %d exceeds the %d bytes sent", dlen, len(payload)-cnMsgLen)
		}
		if idx != cnIdxProc || val != cnValProc {
			continue
		}
		data := payload[cnMsgLen : cnMsgLen+dlen]
		if len(data) < procEventHdrLen {
			return fmt.Errorf("process event of %d bytes, short of its header", len(data))
		}
		fn(message{
			ack:  ne.Uint32(payload[12:16]),
			what: ne.Uint32(data[0:4]),
			time: ne.Uint64(data[8:16]),
			data: data[procEventHdrLen:],
		})
	}
	return nil
}

// event decodes m if it is a fork, exec or exit event.
func (m message) event() (ev Event, ok bool, err error) {
	var need int
	switch m.what {
	case procEventFork:
		ev.Kind, need = Fork, 16
	case procEventExec:
		ev.Kind, need = Exec, 8
	case procEventExit:
		ev.Kind, need = Exit, 16
	default:
		return Event{}, false, nil
	}
	d := m.data
	if len(d) < need {
		return Event{}, false, fmt.Errorf("%v event of %d bytes, want at least %d", ev.Kind, len(d), need)
	}
	i32 := func(off int) int { return int(int32(ne.Uint32(d[off : off+4]))) }
	ev.Time = time.Duration(m.time)
	switch ev.Kind {
	case Fork:
		ev.ParentPID, ev.ParentTGID = i32(0), i32(4)
		ev.PID, ev.TGID = i32(8), i32(12)
	case Exec:
		ev.PID, ev.TGID = i32(0), i32(4)
	case Exit:
		ev.PID, ev.TGID = i32(0), i32(4)
		ev.ExitCode, ev.ExitSignal = ne.Uint32(d[8:12]), ne.Uint32(d[12:16])
		if len(d) >= 24 {
			ev.ParentPID, ev.ParentTGID = i32(16), i32(20)
		}
	}
	return ev, true, nil
}

// parse appends the fork, exec and exit events of datagram b to dst. On
// error it returns dst with the events decoded before the malformed part.
func parse(b []byte, dst []Event) ([]Event, error) {
	var perr error
	err := messages(b, func(m message) {
		if perr != nil {
			return
		}
		ev, ok, err := m.event()
		switch {
		case err != nil:
			perr = err
		case ok:
			dst = append(dst, ev)
		}
	})
	if err == nil {
		err = perr
	}
	return dst, err
}

// subscription is the datagram that subscribes to (procCnMcastListen) or
// unsubscribes from (procCnMcastIgnore) the process events; the kernel's
// acknowledgement carries ack+1.
func subscription(op, ack, portID uint32) []byte {
	const n = nlmsgHdrLen + cnMsgLen + 4
	b := make([]byte, n)
	ne.PutUint32(b[0:4], n)
	ne.PutUint16(b[4:6], nlmsgDone)
	ne.PutUint32(b[12:16], portID)
	c := b[nlmsgHdrLen:]
	ne.PutUint32(c[0:4], cnIdxProc)
	ne.PutUint32(c[4:8], cnValProc)
	ne.PutUint32(c[12:16], ack)
	ne.PutUint16(c[16:18], 4)
	ne.PutUint32(c[20:24], op)
	return b
}
