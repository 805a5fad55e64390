package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/crypto/stream"
)

// TestSealedPumpCarriesNoPlaintext sends a canary through pumpSealed over a
// real loopback connection and inspects the raw bytes: the inner layer
// alone, without TLS, must hide it; the receiving side recovers it, and a
// truncated capture is refused.
func TestSealedPumpCarriesNoPlaintext(t *testing.T) {
	send, _ := keys.NewDataKey()
	k := &innerKeys{send: send, recv: send, sendHdr: stream.Header{KeyID: "kek-test", Route: "pacs", Jurisdiction: "EU"}, wantRoute: "pacs", wantJurisdiction: "EU"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	captured := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c)
		captured <- b
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	plain := strings.Repeat("PID|1||4711^^^HOSP||CANARY^Zebulon||19700101|F\r", 2000)
	if _, err := pumpSealed(c, strings.NewReader(plain), k, func(int) {}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	raw := <-captured
	if bytes.Contains(raw, []byte("Zebulon")) || bytes.Contains(raw, []byte("4711^^^HOSP")) {
		t.Fatal("plaintext visible between the sidecars")
	}
	open := func(b []byte) (string, error) {
		r, err := openSealed(&frameReader{r: bytes.NewReader(b)}, k)
		if err != nil {
			return "", err
		}
		got, err := io.ReadAll(r)
		return string(got), err
	}
	if got, err := open(raw); err != nil || got != plain {
		t.Fatalf("open: %d bytes, %v", len(got), err)
	}
	if _, err := open(raw[:len(raw)-frameHeaderLen-40]); err == nil {
		t.Fatal("a truncated stream opened")
	}
	other := *k
	other.wantRoute = "ris"
	if _, err := openSealed(&frameReader{r: bytes.NewReader(raw)}, &other); !errors.Is(err, errContext) {
		t.Fatalf("stream for another route: %v, want errContext", err)
	}
}
