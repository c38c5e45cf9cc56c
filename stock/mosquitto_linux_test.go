package stock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/internal/testutil"
	"github.com/hotpatch/hotpatch/patch"
)

// The stock server of these tests: Debian 12's mosquitto 2.0.11-1.2+deb12u1
// (an MQTT broker), from the security archive. The main archive has the
// source of 2.0.11-1.2+deb12u2 only; leaving out the ten patches that
// version added gives the installed program, which the proof checks. `make
// stock-demo` installs that version (without starting its service).
const (
	mosquittoBin           = "/usr/sbin/mosquitto"
	mosquittoInstalled     = "2.0.11-1.2+deb12u1"
	mosquittoSourceVersion = "2.0.11-1.2+deb12u2"
)

var mosquittoDrops = []string{
	"CVE-2024-8376-1of3.patch", "CVE-2024-8376-2of3.patch", "CVE-2024-8376-3of3.patch",
	"0015-Fix-QoS-1-QoS-2-publish-incorrectly-returning-no-sub.patch",
	"0016-Fix-crash-on-bridge-using-remapped-topic-being-sent-.patch",
	"0017-Don-t-allow-SUBACK-with-missing-reason-codes.patch",
	"0018-Further-fix-for-CVE-2023-28366.patch",
	"0019-Fixed-issue-in-CA-cert.-creation.patch",
	"0020-t-Makefile-Generate-test-certs-if-not-present-in-sou.patch",
	"0021-Remove-generated-ssl-certs.patch",
}

var mosquittoCase = stockCase{
	binary: mosquittoBin, installed: mosquittoInstalled, sourceVersion: mosquittoSourceVersion, drops: mosquittoDrops,
	install: "make stock-demo installs it",
}

// TestStockServerLive patches Debian's own mosquitto broker, running and
// serving clients, with Debian's backport of the upstream fix for the
// memory leak of CVE-2023-28366 (a packet dropped at max_queued_messages
// kept its payload): before the patch every dropped message leaks its
// payload (the broker's own heap counter, $SYS/broker/heap/current,
// grows); after it the heap stays flat; the clients that read go on
// receiving every message throughout; revert brings the leak back.
func TestStockServerLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	prep := mosquittoCase.prepare(t, ctx)
	p, pub := signedPatch(t, ctx, prep, []string{"testdata/mosquitto/CVE-2023-28366-further.patch"}, builder.Options{ID: "mosquitto-CVE-2023-28366", CVEs: []string{"CVE-2023-28366"}})

	broker := startMosquitto(t)
	heap := broker.subscribeHeap(t)
	load := broker.startLoad(t)

	leak := func(phase string) int64 {
		t.Helper()
		before := heap.settled(t)
		broker.flood(t, 3000, 16<<10)
		after := heap.settled(t)
		t.Logf("%s: heap %d -> %d bytes after 3000 messages of 16 KiB to a client that does not read", phase, before, after)
		return after - before
	}
	vulnerable := leak("stock")
	// The stuck client's socket buffers take a few MiB; the rest (up to
	// 47 MiB) is dropped at max_queued_messages, and leaked.
	if vulnerable < 16<<20 {
		t.Fatalf("the stock broker leaked %d bytes for 3000 messages of 16 KiB to a stuck client; the vulnerability does not show, so the test would prove nothing (broker log: %s)", vulnerable, lastLines(broker.proc.Stderr(), 10))
	}
	res, err := engine.Apply(broker.proc.Pid(), p, engine.Options{Trusted: []patch.PublicKey{pub}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("Apply to the running broker: %v", err)
	}
	t.Logf("applied: %d function(s), paused %v", res.Functions, res.Paused)
	if patched := leak("patched"); patched > vulnerable/10 {
		t.Errorf("the patched broker still leaked %d bytes (stock: %d)", patched, vulnerable)
	}
	if _, err := engine.Revert(broker.proc.Pid(), p.ID, 10*time.Second); err != nil {
		t.Fatalf("Revert: %v", err)
	}
	if again := leak("reverted"); again < vulnerable/2 {
		t.Errorf("after revert the broker leaked %d bytes, want about %d again", again, vulnerable)
	}
	sent, got := load.finish(t)
	if sent < 100 || got != sent {
		t.Errorf("the reading client got %d of %d messages published during the test", got, sent)
	}
	t.Logf("%d messages to a reading client, none lost", sent)
}

// TestStockRefusesLayoutChange: Debian's fix for CVE-2024-8376 changes the
// broker's global struct mosquitto_db (one hash table becomes two); the
// running broker's db would be read with the new layout, so the builder
// must refuse and name it.
func TestStockRefusesLayoutChange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	prep := mosquittoCase.prepare(t, ctx)
	fixed, err := prep.Fixed(ctx, []string{"testdata/mosquitto/CVE-2024-8376.patch"})
	if err != nil {
		t.Fatalf("Fixed: %v", err)
	}
	_, err = prep.Patch(fixed, builder.Options{ID: "mosquitto-CVE-2024-8376"})
	if err == nil {
		t.Fatal("the builder accepted a fix that changes the layout of the broker's global db")
	}
	if !strings.Contains(err.Error(), "db") {
		t.Errorf("refusal %q does not name db", err)
	}
	t.Logf("refused: %v", err)
}

type mosquitto struct {
	proc *fixture.Proc
	addr string
}

func startMosquitto(t *testing.T) *mosquitto {
	t.Helper()
	port := freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	cfg := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1\nmax_inflight_messages 0\nsys_interval 1\npersistence false\nuser root\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n", port)
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{proc: fixture.StartArgs(t, []string{mosquittoBin, "-c", conf}), addr: fmt.Sprintf("127.0.0.1:%d", port)}
	waitListening(t, "mosquitto", m.proc, m.addr)
	return m
}

// freePort returns a loopback port that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitListening waits until the server proc (named name) accepts
// connections on addr.
func waitListening(t *testing.T, name string, proc *fixture.Proc, addr string) {
	t.Helper()
	var last error
	testutil.Eventually(t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		last = err
		return err == nil
	}, func() string {
		return fmt.Sprintf("%s listening on %s (%v; stderr: %s)", name, addr, last, proc.Stderr())
	})
}

// mqttClient is the smallest MQTT 3.1.1 client: connect, subscribe,
// publish at QoS 0, read publishes.
type mqttClient struct {
	c net.Conn
	r *bufio.Reader
}

func (m *mosquitto) connect(t *testing.T, id string) *mqttClient {
	t.Helper()
	c, err := net.Dial("tcp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &mqttClient{c: c, r: bufio.NewReader(c)}
	var body []byte
	body = append(body, mqttString("MQTT")...)
	body = append(body, 4, 0x02, 0, 0) // level 4, clean session, no keep-alive
	body = append(body, mqttString(id)...)
	cl.write(t, 0x10, body)
	typ, _, err := cl.read()
	if err != nil || typ != 0x20 {
		t.Fatalf("CONNECT %s: packet %#x, %v", id, typ, err)
	}
	return cl
}

func mqttString(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

func (cl *mqttClient) write(t *testing.T, header byte, body []byte) {
	t.Helper()
	pkt := []byte{header}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if n == 0 {
			break
		}
	}
	cl.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := cl.c.Write(append(pkt, body...)); err != nil {
		t.Fatalf("mqtt write: %v", err)
	}
}

func (cl *mqttClient) read() (byte, []byte, error) {
	typ, err := cl.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := cl.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mult
		mult *= 128
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("mqtt: bad remaining length")
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(cl.r, body)
	return typ &^ 0x0f, body, err
}

func (cl *mqttClient) subscribe(t *testing.T, topic string) {
	cl.subscribeQoS(t, topic, 0)
}

func (cl *mqttClient) subscribeQoS(t *testing.T, topic string, qos byte) {
	t.Helper()
	body := append([]byte{0, 1}, mqttString(topic)...)
	body = append(body, qos)
	cl.write(t, 0x82, body)
	cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if typ, _, err := cl.read(); err != nil || typ != 0x90 {
		t.Fatalf("SUBSCRIBE %s: packet %#x, %v", topic, typ, err)
	}
	cl.c.SetReadDeadline(time.Time{})
}

func (cl *mqttClient) publish(t *testing.T, topic string, payload []byte) {
	cl.write(t, 0x30, append(mqttString(topic), payload...))
}

// publishBody splits a PUBLISH (QoS 0) into topic and payload.
func publishBody(body []byte) (string, []byte) {
	if len(body) < 2 {
		return "", nil
	}
	n := int(body[0])<<8 | int(body[1])
	if 2+n > len(body) {
		return "", nil
	}
	return string(body[2 : 2+n]), body[2+n:]
}

// heapWatch follows $SYS/broker/heap/current, the broker's count of the
// bytes it has allocated, published every sys_interval (1 s) when it
// changed.
type heapWatch struct {
	mu   sync.Mutex
	last int64
	seen bool
	at   time.Time
}

func (m *mosquitto) subscribeHeap(t *testing.T) *heapWatch {
	cl := m.connect(t, "heap-watch")
	cl.subscribe(t, "$SYS/broker/heap/current")
	h := &heapWatch{}
	go func() {
		for {
			typ, body, err := cl.read()
			if err != nil {
				return
			}
			if typ != 0x30 {
				continue
			}
			if _, v := publishBody(body); len(v) > 0 {
				if n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64); err == nil {
					h.mu.Lock()
					h.last, h.seen, h.at = n, true, time.Now()
					h.mu.Unlock()
				}
			}
		}
	}()
	return h
}

// settled waits until the counter has not changed for 2.5 report intervals,
// counted from the call, and returns it.
func (h *heapWatch) settled(t *testing.T) int64 {
	t.Helper()
	// A change is published within one interval: after 2.5 s without a
	// report since the call, the last value is the current one.
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		v, seen, at := h.last, h.seen, h.at
		h.mu.Unlock()
		if seen && time.Since(start) > 2500*time.Millisecond && time.Since(at) > 2500*time.Millisecond {
			return v
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("$SYS/broker/heap/current was not reported, or did not settle, within 30 s")
	return 0
}

// flood publishes n messages of size bytes at QoS 1 to a subscriber (QoS
// 1) that never reads. Once its socket is full, each message the broker
// sends it is dropped at max_queued_messages (1) in packet__queue, which is
// where the packet's payload leaked (CVE-2023-28366, the further fix).
func (m *mosquitto) flood(t *testing.T, n, size int) {
	t.Helper()
	stuck := m.connect(t, fmt.Sprintf("stuck-%d", time.Now().UnixNano()))
	stuck.subscribeQoS(t, "flood", 1)
	pubc := m.connect(t, fmt.Sprintf("flooder-%d", time.Now().UnixNano()))
	payload := make([]byte, size)
	acks := make(chan error, 1)
	go func() {
		// Read the PUBACKs, then the PINGRESP that follows them.
		pubc.c.SetReadDeadline(time.Now().Add(60 * time.Second))
		for {
			typ, _, err := pubc.read()
			if err != nil || typ == 0xd0 {
				acks <- err
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		id := i%65535 + 1
		body := append(mqttString("flood"), byte(id>>8), byte(id))
		pubc.write(t, 0x32, append(body, payload...))
	}
	// A round trip on the publisher's connection: the broker has handled
	// every publish before it answers the ping.
	pubc.write(t, 0xc0, nil)
	if err := <-acks; err != nil {
		t.Fatalf("waiting for the PINGRESP after the flood: %v", err)
	}
	stuck.c.Close()
	pubc.c.Close()
}

// mqttLoad publishes numbered messages to a client that reads them all,
// for the whole test.
type mqttLoad struct {
	stop chan struct{}
	done chan struct{}
	sent int
	mu   sync.Mutex
	got  int
}

func (m *mosquitto) startLoad(t *testing.T) *mqttLoad {
	sub := m.connect(t, "load-reader")
	sub.subscribe(t, "load")
	pubc := m.connect(t, "load-writer")
	l := &mqttLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		for {
			typ, body, err := sub.read()
			if err != nil {
				return
			}
			if topic, _ := publishBody(body); typ == 0x30 && topic == "load" {
				l.mu.Lock()
				l.got++
				l.mu.Unlock()
			}
		}
	}()
	go func() {
		defer close(l.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
				pubc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := pubc.c.Write([]byte{0x30, 9, 0, 4, 'l', 'o', 'a', 'd', 'm', 's', 'g'}); err != nil {
					return
				}
				l.sent++
			}
		}
	}()
	return l
}

// finish stops publishing, waits until the reader has what was sent (or
// 10 s), and returns both counts.
func (l *mqttLoad) finish(t *testing.T) (sent, got int) {
	close(l.stop)
	<-l.done
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		got = l.got
		l.mu.Unlock()
		if got >= l.sent {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return l.sent, got
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
