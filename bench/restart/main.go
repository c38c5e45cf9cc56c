// Command restart compares the traditional way of shipping a fix — restart
// the service — with hotpatching it, under the same load: a loopback TCP
// service (bench/restart/svc) with 8 client connections sending requests
// back to back. It prints, per scenario, the requests served, the requests
// that failed, and the longest time a client waited for an answer.
//
//	go run ./bench/restart [-d 3s] [-c 8]
//
// It starts, signals and patches only the service processes it started
// itself, on 127.0.0.1.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotpatch/hotpatch/builder"
	"github.com/hotpatch/hotpatch/engine"
	"github.com/hotpatch/hotpatch/internal/fixture"
	"github.com/hotpatch/hotpatch/patch"
)

var (
	duration = flag.Duration("d", 3*time.Second, "length of each scenario; the change happens in the middle")
	clients  = flag.Int("c", 8, "client connections")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "restart:", err)
		os.Exit(1)
	}
}

type stats struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	lat        []time.Duration
}

func (s *stats) add(d time.Duration) {
	s.mu.Lock()
	s.lat = append(s.lat, d)
	s.mu.Unlock()
}

func run() error {
	flags := []string{"-O2", "-pthread", "-ffunction-sections", "-fdata-sections", "-Wl,--emit-relocs"}
	orig, err := fixture.Compile("svc-orig", []string{"bench/restart/svc/orig/svc.c"}, flags...)
	if err != nil {
		return err
	}
	fixed, err := fixture.Compile("svc-fixed", []string{"bench/restart/svc/fixed/svc.c"}, flags...)
	if err != nil {
		return err
	}
	u, err := builder.Build(orig, fixed, builder.Options{ID: "svc-fix"})
	if err != nil {
		return err
	}
	key, pub, err := patch.GenerateKey()
	if err != nil {
		return err
	}
	data, err := patch.Sign(u, key)
	if err != nil {
		return err
	}
	p, err := patch.Load(data)
	if err != nil {
		return err
	}
	fmt.Println("| scenario | requests served | failed | longest wait | p99 latency | pid kept |")
	fmt.Println("|---|---:|---:|---:|---:|---|")
	scenarios := []struct {
		name   string
		change func(cmd **exec.Cmd, bin, fixedBin, port string) error
	}{
		{"restart (stop, start the fixed build)", func(cmd **exec.Cmd, _, fixedBin, port string) error {
			(*cmd).Process.Kill()
			(*cmd).Wait()
			c, err := startService(fixedBin, port)
			*cmd = c
			return err
		}},
		{"hotpatch (apply to the running process)", func(cmd **exec.Cmd, _, _, _ string) error {
			_, err := engine.Apply((*cmd).Process.Pid, p, engine.Options{Trusted: []patch.PublicKey{pub}})
			return err
		}},
	}
	for i, sc := range scenarios {
		port := fmt.Sprint(39000 + i + os.Getpid()%1000)
		cmd, err := startService(orig, port)
		if err != nil {
			return err
		}
		pid := cmd.Process.Pid
		var st stats
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range *clients {
			wg.Add(1)
			go func() { defer wg.Done(); client(port, &st, stop) }()
		}
		time.Sleep(*duration / 2)
		if err := sc.change(&cmd, orig, fixed, port); err != nil {
			close(stop)
			wg.Wait()
			cmd.Process.Kill()
			cmd.Wait()
			return fmt.Errorf("%s: %w", sc.name, err)
		}
		time.Sleep(*duration / 2)
		close(stop)
		wg.Wait()
		kept := cmd.Process.Pid == pid
		cmd.Process.Kill()
		cmd.Wait()
		slices.Sort(st.lat)
		var longest, p99 time.Duration
		if n := len(st.lat); n > 0 {
			longest, p99 = st.lat[n-1], st.lat[n*99/100]
		}
		fmt.Printf("| %s | %d | %d | %v | %v | %v |\n", sc.name, st.ok.Load(), st.failed.Load(),
			longest.Round(time.Microsecond), p99.Round(time.Microsecond), kept)
	}
	return nil
}

func startService(bin, port string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, port)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for range 200 {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			return cmd, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil, errors.New("service did not start listening")
}

// client sends requests back to back on one connection, reconnecting after
// a failure, and records each request's latency (a failed request's wait
// counts until the next success).
func client(port string, st *stats, stop chan struct{}) {
	var conn net.Conn
	var rd *bufio.Reader
	waitStart := time.Time{}
	for {
		select {
		case <-stop:
			if conn != nil {
				conn.Close()
			}
			return
		default:
		}
		if conn == nil {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
			if err != nil {
				st.failed.Add(1)
				if waitStart.IsZero() {
					waitStart = time.Now()
				}
				time.Sleep(time.Millisecond)
				continue
			}
			conn, rd = c, bufio.NewReader(c)
		}
		start := time.Now()
		if waitStart.IsZero() {
			waitStart = start
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := conn.Write([]byte("GET /balance\n"))
		if err == nil {
			_, err = rd.ReadString('\n')
		}
		if err != nil {
			st.failed.Add(1)
			conn.Close()
			conn = nil
			continue
		}
		st.ok.Add(1)
		st.add(time.Since(waitStart))
		waitStart = time.Time{}
	}
}
