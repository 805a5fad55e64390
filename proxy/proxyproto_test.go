package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/proxy"
)

// TestProxyProtocolCarriesSPIFFEID runs a route with PROXY protocol on and
// parses the header the app receives.
func TestProxyProtocolCarriesSPIFFEID(t *testing.T) {
	eu := newPKI(t, "eu.example")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		hdr := make([]byte, 16)
		if _, err := io.ReadFull(c, hdr); err != nil {
			got <- nil
			return
		}
		rest := make([]byte, binary.BigEndian.Uint16(hdr[14:]))
		io.ReadFull(c, rest)
		data := make([]byte, 4)
		io.ReadFull(c, data)
		got <- append(append(hdr, rest...), data...)
	}()
	ps, _ := identity.ParsePatterns("spiffe://eu.example/lab/*")
	server := eu.source("spiffe://eu.example/pacs")
	in := start(t, proxy.Config{Inbound: []proxy.InboundRoute{{Name: "default", Listen: "127.0.0.1:0", Upstream: ln.Addr().String(), Allow: ps, ProxyProtocol: true}}}, proxy.Deps{Source: server})
	out := start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: "127.0.0.1:0", Peer: in.InboundAddr("127.0.0.1:0").String(), PeerID: server.svid.ID}}},
		proxy.Deps{Source: eu.source("spiffe://eu.example/lab/ws7")})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go in.Run(ctx)
	go out.Run(ctx)
	c, err := net.Dial("tcp", out.OutboundAddr("default").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("DATA"))
	b := <-got
	if !bytes.HasPrefix(b, []byte("\r\n\r\n\x00\r\nQUIT\n")) || b[12] != 0x21 || b[13] != 0x11 {
		t.Fatalf("not a PROXY v2 TCP4 header: % x", b)
	}
	body := b[16 : len(b)-4]
	tlvs := body[12:] // after IPv4 addresses and ports
	if tlvs[0] != proxy.TLVSPIFFEID || string(tlvs[3:3+binary.BigEndian.Uint16(tlvs[1:])]) != "spiffe://eu.example/lab/ws7" {
		t.Fatalf("SPIFFE ID TLV = % x", tlvs)
	}
	if string(b[len(b)-4:]) != "DATA" {
		t.Fatalf("data after header = %q", b[len(b)-4:])
	}
}
