package hl7

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/medgate/medgate/proxy/mask"
)

// relay is the data path in small: it accepts senders on loopback, dials
// the receiver for each, masks what the sender sends with Filter and
// carries the receiver's answers back with Replies. A Filter error aborts
// both connections, as the sidecar does.
type relay struct {
	ln      net.Listener
	mu      sync.Mutex
	objects []mask.Object
	errs    []error
	wg      sync.WaitGroup
	done    chan struct{} // one per connection served
}

func startRelay(tb testing.TB, c *Codec, upstream string) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &relay{ln: ln, done: make(chan struct{}, 64)}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c, conn.(*net.TCPConn), upstream)
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		r.wg.Wait()
	})
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) serve(c *Codec, conn *net.TCPConn, upstream string) {
	defer func() { r.done <- struct{}{} }()
	defer conn.Close()
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		r.fail(err)
		return
	}
	defer up.Close()
	replies := make(chan error, 1)
	go func() { replies <- c.Replies(conn, up, up, nil) }()
	err = c.Filter(up, conn, conn, func(o mask.Object) {
		r.mu.Lock()
		r.objects = append(r.objects, o)
		r.mu.Unlock()
	})
	if err != nil {
		r.fail(err)
		conn.Close()
		up.Close()
		<-replies
		return
	}
	up.(*net.TCPConn).CloseWrite()
	if err := <-replies; err != nil && !errors.Is(err, io.EOF) {
		r.fail(err)
	}
}

func (r *relay) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// wait waits for one connection to end.
func (r *relay) wait(tb testing.TB) {
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		tb.Fatal("relay: connection did not end")
	}
}

func (r *relay) results() ([]mask.Object, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mask.Object(nil), r.objects...), append([]error(nil), r.errs...)
}
