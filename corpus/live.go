package corpus

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Service is a running target: a library driver or a server executable,
// started by the corpus itself on the loopback interface.
type Service struct {
	Cmd  *exec.Cmd
	Port int
	dns  bool
	done chan struct{}
	err  error
}

// Start starts a library driver (env LD_LIBRARY_PATH for the PIE variant)
// and waits for it to print its port.
func StartDriver(exe string, env []string) (*Service, error) {
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Service{Cmd: cmd, done: make(chan struct{})}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		if _, err := fmt.Sscanf(l, "port %d", &s.Port); err != nil {
			s.Stop()
			return nil, fmt.Errorf("driver %s said %q, not its port", exe, l)
		}
		return s, nil
	case <-time.After(10 * time.Second):
		s.Stop()
		return nil, fmt.Errorf("driver %s did not print its port in 10s", exe)
	}
}

// StartServer starts a server executable with args ({port} replaced by a
// free loopback port) and waits until it answers.
func StartServer(exe string, args []string, protocol string) (*Service, error) {
	port, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	var a []string
	for _, x := range args {
		a = append(a, strings.ReplaceAll(x, "{port}", strconv.Itoa(port)))
	}
	cmd := exec.Command(exe, a...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Service{Cmd: cmd, Port: port, dns: protocol == "dns", done: make(chan struct{})}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := s.Dial()
		if err == nil {
			_, err = c.Do("B", "a.test")
			c.Close()
			if err == nil {
				return s, nil
			}
		}
		if time.Now().After(deadline) || !s.Alive() {
			s.Stop()
			return nil, fmt.Errorf("%s did not answer on port %d: %v", exe, port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// Alive reports whether the process still runs.
func (s *Service) Alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Stop kills the process and waits for it.
func (s *Service) Stop() {
	if s.Alive() {
		s.Cmd.Process.Kill()
	}
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
}

// ExitState describes how the process ended, for a report.
func (s *Service) ExitState() string {
	if s.Alive() {
		return "running"
	}
	if s.Cmd.ProcessState != nil {
		return s.Cmd.ProcessState.String()
	}
	return fmt.Sprint(s.err)
}

// Conn is one client connection.
type Conn struct {
	c   net.Conn
	r   *bufio.Reader
	dns bool
	id  uint16
}

func (s *Service) Dial() (*Conn, error) {
	if s.dns {
		c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", s.Port))
		if err != nil {
			return nil, err
		}
		return &Conn{c: c, dns: true}, nil
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, r: bufio.NewReader(c)}, nil
}

func (c *Conn) Close() { c.c.Close() }

// Do sends one request: mode "B" (load, in the serving thread) or "P" (a
// probe, in a forked child) for a driver; for a DNS server, arg is the
// query (see dnsDo). It returns the answer line.
func (c *Conn) Do(mode, arg string) (string, error) {
	if err := c.c.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		return "", err
	}
	if c.dns {
		return c.dnsDo(arg)
	}
	if _, err := fmt.Fprintf(c.c, "%s %s\n", mode, arg); err != nil {
		return "", err
	}
	l, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(l, "\n"), nil
}

// dnsDo sends a query for "NAME" (type A) or "edns:NAME" (type A with an
// EDNS0 OPT record offering 4096 bytes) and describes the answer: rcode,
// answer addresses, and the UDP size the server's OPT record advertises.
func (c *Conn) dnsDo(q string) (string, error) {
	edns := strings.HasPrefix(q, "edns:")
	name := strings.TrimPrefix(q, "edns:")
	c.id++
	msg := make([]byte, 12, 512)
	binary.BigEndian.PutUint16(msg[0:], c.id)
	binary.BigEndian.PutUint16(msg[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(msg[4:], 1)
	if edns {
		binary.BigEndian.PutUint16(msg[10:], 1)
	}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		msg = append(msg, byte(len(l)))
		msg = append(msg, l...)
	}
	msg = append(msg, 0, 0, 1, 0, 1)
	if edns {
		msg = append(msg, 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0) // root, OPT, 4096, ttl 0, rdlen 0
	}
	if _, err := c.c.Write(msg); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.c.Read(buf)
		if err != nil {
			return "", err
		}
		if n < 12 || binary.BigEndian.Uint16(buf) != c.id {
			continue // a late answer to an earlier query
		}
		return describeDNS(buf[:n])
	}
}

var errShort = errors.New("short DNS message")

func describeDNS(m []byte) (string, error) {
	rcode := m[3] & 0xf
	qd, an, ns, ar := int(binary.BigEndian.Uint16(m[4:])), int(binary.BigEndian.Uint16(m[6:])),
		int(binary.BigEndian.Uint16(m[8:])), int(binary.BigEndian.Uint16(m[10:]))
	off := 12
	skipName := func() error {
		for {
			if off >= len(m) {
				return errShort
			}
			l := int(m[off])
			if l&0xc0 == 0xc0 {
				off += 2
				return nil
			}
			off++
			if l == 0 {
				return nil
			}
			off += l
		}
	}
	for range qd {
		if err := skipName(); err != nil {
			return "", err
		}
		off += 4
	}
	var addrs []string
	edns := "none"
	for i := range an + ns + ar {
		if err := skipName(); err != nil {
			return "", err
		}
		if off+10 > len(m) {
			return "", errShort
		}
		typ, class := binary.BigEndian.Uint16(m[off:]), binary.BigEndian.Uint16(m[off+2:])
		rdlen := int(binary.BigEndian.Uint16(m[off+8:]))
		off += 10
		if off+rdlen > len(m) {
			return "", errShort
		}
		if i < an && typ == 1 && rdlen == 4 {
			addrs = append(addrs, net.IP(m[off:off+4]).String())
		}
		if typ == 41 {
			edns = strconv.Itoa(int(class))
		}
		off += rdlen
	}
	return fmt.Sprintf("rcode=%d answers=%s edns=%s", rcode, strings.Join(addrs, ","), edns), nil
}

// Load runs workers clients that repeat a request and compare every answer
// with want, until stopped.
type Load struct {
	OK, Failed atomic.Int64
	mu         sync.Mutex
	first      string // the first failure
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

func StartLoad(s *Service, workers int, arg, want string) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{cancel: cancel}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var c *Conn
			for ctx.Err() == nil {
				if c == nil {
					var err error
					if c, err = s.Dial(); err != nil {
						l.fail(err.Error())
						time.Sleep(10 * time.Millisecond)
						continue
					}
				}
				got, err := c.Do("B", arg)
				if err != nil {
					l.fail(err.Error())
					c.Close()
					c = nil
					continue
				}
				if got != want {
					l.fail(fmt.Sprintf("answer %q, want %q", got, want))
					continue
				}
				l.OK.Add(1)
			}
			if c != nil {
				c.Close()
			}
		}()
	}
	return l
}

func (l *Load) fail(s string) {
	l.Failed.Add(1)
	l.mu.Lock()
	if l.first == "" {
		l.first = s
	}
	l.mu.Unlock()
}

// Stop ends the load; FirstFailure names the first failed request.
func (l *Load) Stop() { l.cancel(); l.wg.Wait() }

func (l *Load) FirstFailure() string { l.mu.Lock(); defer l.mu.Unlock(); return l.first }
