package proxy

import (
	"encoding/binary"
	"errors"
	"net"
)

// PROXY protocol v2 (haproxy.org/download/2.9/doc/proxy-protocol.txt).
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// TLVSPIFFEID is the PROXY protocol v2 TLV type that carries the peer's
// SPIFFE ID (from the custom range 0xE0-0xEF).
const TLVSPIFFEID = 0xE0

// proxyHeader builds a PROXY v2 PROXY-command header for a connection from
// src to dst, with the peer's SPIFFE ID as a TLV.
func proxyHeader(src, dst net.Addr, spiffeID string) ([]byte, error) {
	s, ok1 := src.(*net.TCPAddr)
	d, ok2 := dst.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return nil, errors.New("proxy: PROXY protocol needs TCP addresses")
	}
	var fam byte
	var addrs []byte
	if s4, d4 := s.IP.To4(), d.IP.To4(); s4 != nil && d4 != nil {
		fam = 0x11 // TCP over IPv4
		addrs = append(append(addrs, s4...), d4...)
	} else {
		fam = 0x21 // TCP over IPv6
		addrs = append(append(addrs, s.IP.To16()...), d.IP.To16()...)
	}
	addrs = binary.BigEndian.AppendUint16(addrs, uint16(s.Port))
	addrs = binary.BigEndian.AppendUint16(addrs, uint16(d.Port))
	tlv := []byte{TLVSPIFFEID}
	tlv = binary.BigEndian.AppendUint16(tlv, uint16(len(spiffeID)))
	tlv = append(tlv, spiffeID...)
	h := append([]byte{}, proxyV2Sig...)
	h = append(h, 0x21, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(addrs)+len(tlv)))
	h = append(h, addrs...)
	return append(h, tlv...), nil
}
