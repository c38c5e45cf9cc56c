package procevents

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	// rcvbuf is the receive buffer Listen asks for: some 10000 events.
	rcvbuf = 8 << 20
	// maxBatch caps the datagrams one Read returns.
	maxBatch = 256
)

// Listener receives process events. Read from one goroutine; Close from any.
type Listener struct {
	f       *os.File
	rc      syscall.RawConn
	buf     []byte
	closed  atomic.Bool
	pending []Event // received by Listen before the acknowledgement
	next    error   // to return from the next Read: events were lost
}

// Listen subscribes to the process events of the whole system. It must run
// in the initial PID and user namespaces, and needs CAP_NET_ADMIN on older
// kernels (6.18 lets any user subscribe, with a receive buffer capped by
// net.core.rmem_max).
func Listen() (*Listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("procevents: netlink connector socket: %w", err)
	}
	l, err := subscribe(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	l.f = os.NewFile(uintptr(fd), "netlink-connector-proc")
	if l.rc, err = l.f.SyscallConn(); err != nil {
		l.f.Close()
		return nil, fmt.Errorf("procevents: %w", err)
	}
	return l, nil
}

func needCap(err error) error {
	return fmt.Errorf("procevents: process events need CAP_NET_ADMIN on this kernel (run hotpatchd as root): %w", err)
}

func overrun() error {
	return fmt.Errorf("procevents: kernel receive queue overrun (%w): %w", unix.ENOBUFS, ErrOverrun)
}

func undecodable(err error) error {
	return fmt.Errorf("procevents: undecodable message from the kernel (%v): %w", err, ErrOverrun)
}

func subscribe(fd int) (*Listener, error) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
		// Without CAP_NET_ADMIN: capped by net.core.rmem_max, best effort.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, needCap(err)
		}
		return nil, fmt.Errorf("procevents: bind to the process connector: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("procevents: getsockname: %w", err)
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return nil, fmt.Errorf("procevents: getsockname: unexpected address %T", sa)
	}
	ack := rand.Uint32()
	if err := unix.Sendto(fd, subscription(procCnMcastListen, ack, nl.Pid), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		switch {
		case errors.Is(err, unix.EPERM):
			return nil, needCap(err)
		case errors.Is(err, unix.ECONNREFUSED):
			return nil, fmt.Errorf("procevents: no process connector in this network namespace; "+
				"it exists only in the initial one (run hotpatchd on the host network): %w", err)
		}
		return nil, fmt.Errorf("procevents: subscribe to the process connector: %w", err)
	}
	l := &Listener{buf: make([]byte, 64<<10)}
	if err := l.awaitAck(fd, ack+1); err != nil {
		return nil, err
	}
	return l, nil
}

// awaitAck reads what is queued on the socket, up to the kernel's
// acknowledgement of the subscription (cn_msg ack == want), keeping the
// events that came before it for the first Read. The kernel handles the
// subscription, and queues its acknowledgement, before sendto returns.
func (l *Listener) awaitAck(fd int, want uint32) error {
	var errno uint32
	acked := false
	for !acked {
		n, from, err := recv(fd, l.buf)
		switch {
		case err == unix.EAGAIN:
			if l.next != nil {
				return nil // the acknowledgement may have been lost too
			}
			return errors.New("procevents: the kernel ignored the subscription to process events; " +
				"it serves only the initial PID and user namespaces (run hotpatchd on the host, not in a container)")
		case err == unix.ENOBUFS:
			l.next = overrun()
			continue
		case err != nil:
			return fmt.Errorf("procevents: read the subscription's acknowledgement: %w", err)
		case from != 0:
			continue // not the kernel
		}
		var perr error
		err = messages(l.buf[:n], func(m message) {
			if acked || perr != nil {
				return
			}
			if m.what == procEventNone && m.ack == want {
				acked = true
				if len(m.data) >= 4 {
					errno = ne.Uint32(m.data)
				}
				return
			}
			ev, ok, err := m.event()
			if err != nil {
				perr = err
			} else if ok {
				l.pending = append(l.pending, ev)
			}
		})
		if err == nil {
			err = perr
		}
		if err != nil {
			l.next = undecodable(err)
		}
	}
	switch e := syscall.Errno(errno); e {
	case 0:
		return nil
	case unix.EPERM:
		return needCap(e)
	default:
		return fmt.Errorf("procevents: the kernel refused the subscription to process events: %w", e)
	}
}

// recv reads one datagram; from is the sender's netlink port (0: the kernel).
func recv(fd int, buf []byte) (n int, from uint32, err error) {
	for {
		n, _, flags, sa, err := unix.Recvmsg(fd, buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, 0, err
		}
		if flags&unix.MSG_TRUNC != 0 {
			return 0, 0, unix.ENOBUFS // a datagram larger than buf: lost
		}
		from = ^uint32(0)
		if nl, ok := sa.(*unix.SockaddrNetlink); ok {
			from = nl.Pid
		}
		return n, from, nil
	}
}

// Read blocks until events arrive and returns those of the datagrams
// then queued (one or more). It returns either events or an error: an
// error wrapping os.ErrClosed once Close was called, or one wrapping
// ErrOverrun when events were lost (after returning the events queued
// before the loss). Read only reports a loss once the kernel delivers
// events again, so a rescan of /proc started after it sees every process
// the lost events were about. Datagrams not sent by the kernel are skipped.
func (l *Listener) Read() ([]Event, error) {
	if l.closed.Load() {
		return nil, fmt.Errorf("procevents: read: %w", os.ErrClosed)
	}
	if evs := l.pending; len(evs) > 0 {
		l.pending = nil
		return evs, nil
	}
	if err := l.next; err != nil {
		l.next = nil
		return nil, err
	}
	var (
		evs  []Event
		lost error // events were lost
		fail error // the socket failed
	)
	err := l.rc.Read(func(fd uintptr) bool {
		for batch := 0; batch < maxBatch || lost != nil; {
			n, from, err := recv(int(fd), l.buf)
			switch {
			case err == unix.EAGAIN:
				return len(evs) > 0 || lost != nil // else wait for more
			case err == unix.ENOBUFS:
				// The kernel now drops every event until the queue is
				// empty (the socket is "congested"): drain it first.
				lost = overrun()
				continue
			case err != nil:
				fail = fmt.Errorf("procevents: read: %w", err)
				return true
			case from != 0:
				continue // not the kernel: forged
			}
			batch++
			if evs, err = parse(l.buf[:n], evs); err != nil && lost == nil {
				lost = undecodable(err)
			}
		}
		return true
	})
	switch {
	case l.closed.Load():
		return nil, fmt.Errorf("procevents: read: %w", os.ErrClosed)
	case err != nil:
		return nil, fmt.Errorf("procevents: read: %w", err)
	case fail != nil && len(evs) > 0:
		l.next = fail
	case fail != nil:
		return nil, fail
	case lost != nil && len(evs) > 0:
		l.next = lost
	case lost != nil:
		return nil, lost
	}
	return evs, nil
}

// Close unsubscribes, closes the socket and makes a pending Read return.
// It is safe to call more than once and from any goroutine.
func (l *Listener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	// Tell the kernel, so it stops preparing events nobody reads (it
	// counts listeners); best effort.
	_ = l.rc.Control(func(fd uintptr) {
		_ = unix.Sendto(int(fd), subscription(procCnMcastIgnore, 0, 0), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	})
	return l.f.Close()
}
