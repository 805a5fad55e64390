package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// sink is the far end: the first byte of a connection picks its mode.
//
//	'B' read to EOF, answer the byte count (8 bytes, big endian)
//	'R' echo
//	'I' hold the connection open, counted in idle
type sink struct {
	ln   net.Listener
	idle atomic.Int64
	mu   sync.Mutex
	held []net.Conn
}

func startSink() (*sink, error) { return startSinkOn("127.0.0.1:0") }

func startSinkOn(addr string) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &sink{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s, nil
}

func (s *sink) Addr() string { return s.ln.Addr().String() }
func (s *sink) Close()       { s.ln.Close(); s.release() }

func (s *sink) release() {
	s.mu.Lock()
	for _, c := range s.held {
		c.Close()
	}
	s.held = nil
	s.mu.Unlock()
	s.idle.Store(0)
}

func (s *sink) serve(c net.Conn) {
	mode := make([]byte, 1)
	if _, err := io.ReadFull(c, mode); err != nil {
		c.Close()
		return
	}
	switch mode[0] {
	case 'B':
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		c.Write(b[:])
	case 'R':
		defer c.Close()
		io.Copy(c, c)
	case 'I':
		s.mu.Lock()
		s.held = append(s.held, c)
		s.mu.Unlock()
		s.idle.Add(1)
	default:
		c.Close()
	}
}

// waitReady retries an echo through entry until it works.
func waitReady(entry string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := roundTrips(entry, 1)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bulk sends n bytes through entry and waits for the sink's count.
func bulk(entry string, n int64) (time.Duration, error) {
	c, err := net.Dial("tcp", entry)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	if _, err := c.Write([]byte{'B'}); err != nil {
		return 0, err
	}
	for sent := int64(0); sent < n; {
		k := min(int64(len(buf)), n-sent)
		if _, err := c.Write(buf[:k]); err != nil {
			return 0, err
		}
		sent += k
	}
	c.(*net.TCPConn).CloseWrite()
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("no count from sink: %w", err)
	}
	if got := int64(binary.BigEndian.Uint64(b[:])); got != n {
		return 0, fmt.Errorf("sink counted %d bytes, sent %d", got, n)
	}
	return time.Since(start), nil
}

// roundTrips sends n 100-byte requests and returns each round trip in µs.
func roundTrips(entry string, n int) ([]float64, error) {
	c, err := net.DialTimeout("tcp", entry, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	c.(*net.TCPConn).SetNoDelay(true)
	if _, err := c.Write([]byte{'R'}); err != nil {
		return nil, err
	}
	req := make([]byte, 100)
	resp := make([]byte, 100)
	warm := min(n, 50)
	lat := make([]float64, 0, n)
	for i := range n + warm {
		req[0] = byte(i)
		start := time.Now()
		if _, err := c.Write(req); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return nil, err
		}
		if resp[0] != req[0] {
			return nil, errors.New("echo mismatch")
		}
		if i >= warm {
			lat = append(lat, float64(time.Since(start).Nanoseconds())/1e3)
		}
	}
	return lat, nil
}

// idleMemory opens n idle connections through c and returns the growth of
// the proxies' resident memory per connection, in KiB.
func idleMemory(c *config, s *sink, n int) (float64, error) {
	defer s.release()
	before := rssKiB(c.pids)
	conns, err := openIdle(c, s, n)
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	if err != nil {
		return 0, err
	}
	time.Sleep(500 * time.Millisecond)
	after := rssKiB(c.pids)
	return float64(after-before) / float64(n), nil
}

// openIdle opens n connections through c that the sink holds idle and
// returns them once all have reached it; the caller closes them, also on
// error.
func openIdle(c *config, s *sink, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	deadline := time.Now().Add(2 * time.Minute)
	for i := range n {
		cc, err := net.Dial("tcp", c.entry)
		if err != nil {
			return conns, err
		}
		conns = append(conns, cc)
		if _, err := cc.Write([]byte{'I'}); err != nil {
			return conns, err
		}
		// Open them in batches, as clients arriving over time would, not
		// as one burst that tests handshake limits instead of memory.
		if (i+1)%100 == 0 || i == n-1 {
			for s.idle.Load() < int64(i+1) {
				if time.Now().After(deadline) {
					return conns, fmt.Errorf("only %d of %d idle connections reached the sink", s.idle.Load(), n)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	return conns, nil
}

// cpuSeconds sums user and system CPU time of pids from /proc.
func cpuSeconds(pids []int) float64 {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) > 12 {
			u, _ := strconv.ParseInt(fields[11], 10, 64)
			st, _ := strconv.ParseInt(fields[12], 10, 64)
			ticks += u + st
		}
	}
	return float64(ticks) / 100 // USER_HZ
}

func rssKiB(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += k
			}
		}
	}
	return total
}

// connRate opens n connections through entry one after another, each
// carrying one byte each way, and returns connections per second.
func connRate(entry string, n int) (float64, error) {
	start := time.Now()
	b := []byte{'R', 'x'}
	for range n {
		c, err := net.DialTimeout("tcp", entry, 5*time.Second)
		if err != nil {
			return 0, err
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(b); err != nil {
			c.Close()
			return 0, err
		}
		if _, err := io.ReadFull(c, b[1:]); err != nil {
			c.Close()
			return 0, fmt.Errorf("no echo: %w", err)
		}
		c.Close()
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
