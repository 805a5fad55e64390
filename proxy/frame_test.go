package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestHelloValidate(t *testing.T) {
	good := Hello{Version: 1, Route: "pacs", Session: strings.Repeat("a1", 16)}
	tests := []struct {
		name string
		mod  func(*Hello)
		ok   bool
	}{
		{"good", func(*Hello) {}, true},
		{"version", func(h *Hello) { h.Version = 2 }, false},
		{"no route", func(h *Hello) { h.Route = "" }, false},
		{"long route", func(h *Hello) { h.Route = strings.Repeat("r", 129) }, false},
		{"short session", func(h *Hello) { h.Session = "abc" }, false},
		{"upper-case session", func(h *Hello) { h.Session = strings.Repeat("A1", 16) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := good
			tt.mod(&h)
			if err := h.validate(); (err == nil) != tt.ok {
				t.Errorf("validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestFrameLimits(t *testing.T) {
	var buf bytes.Buffer
	buf.Write([]byte{frameHello, 0x00, 0x10, 0x00, 0x01}) // 1 MiB + 1 control frame
	var h Hello
	if _, _, err := readControl(&buf, frameHello, &h); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized hello: %v, want ErrFrameTooLarge", err)
	}
	buf.Reset()
	buf.Write([]byte{0x7f, 0, 0, 0, 0})
	if _, _, err := readControl(&buf, frameHello, &h); !errors.Is(err, ErrUnexpectedFrame) {
		t.Errorf("unknown type: %v, want ErrUnexpectedFrame", err)
	}
	buf.Reset()
	writeFrame(&buf, frameData, []byte("x"))
	if _, _, err := readControl(&buf, frameHello, &h); !errors.Is(err, ErrUnexpectedFrame) {
		t.Errorf("data before admission: %v, want ErrUnexpectedFrame", err)
	}
}

func TestFrameReaderTruncation(t *testing.T) {
	var buf bytes.Buffer
	fw := &frameWriter{w: &buf}
	fw.Write([]byte("hello world"))
	whole := append([]byte{}, buf.Bytes()...)
	writeFrame(&buf, frameEnd, nil)
	got, err := io.ReadAll(&frameReader{r: bytes.NewReader(buf.Bytes())})
	if err != nil || string(got) != "hello world" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	for cut := 0; cut < len(whole); cut++ {
		_, err := io.ReadAll(&frameReader{r: bytes.NewReader(whole[:cut])})
		if !errors.Is(err, errTruncated) {
			t.Fatalf("cut at %d: %v, want errTruncated", cut, err)
		}
	}
	// No end frame: the stream is truncated even at a frame boundary.
	if _, err := io.ReadAll(&frameReader{r: bytes.NewReader(whole)}); !errors.Is(err, errTruncated) {
		t.Fatalf("missing end frame: %v, want errTruncated", err)
	}
}

func FuzzReadControl(f *testing.F) {
	var buf bytes.Buffer
	writeJSONFrame(&buf, frameHello, Hello{Version: 1, Route: "pacs", Session: strings.Repeat("0f", 16), Posture: "x.y.z"})
	f.Add(buf.Bytes())
	buf.Reset()
	writeJSONFrame(&buf, frameDeny, Deny{Reason: "id_not_allowed"})
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		var h Hello
		_, _, err := readControl(bytes.NewReader(data), frameHello, &h)
		if err == nil {
			h.validate()
		}
	})
}

func FuzzFrameReader(f *testing.F) {
	var buf bytes.Buffer
	(&frameWriter{w: &buf}).Write([]byte("some application bytes"))
	writeJSONFrame(&buf, frameClose, Close{Reason: "posture_expired"})
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := &frameReader{r: bytes.NewReader(data), onPosture: func([]byte) error { return nil }}
		got, err := io.ReadAll(fr)
		if err == nil && len(got) > len(data) {
			t.Fatalf("read %d bytes from %d", len(got), len(data))
		}
		// Errors stick.
		if err != nil {
			if _, again := fr.Read(make([]byte, 1)); again == nil {
				t.Fatal("error did not stick")
			}
		}
	})
}

func TestPendingSetEviction(t *testing.T) {
	conns := func(n int) []*fakeConn {
		cs := make([]*fakeConn, n)
		for i := range cs {
			cs[i] = &fakeConn{}
		}
		return cs
	}
	t.Run("young handshakes are kept, the newcomer refused", func(t *testing.T) {
		p := &pendingSet{max: 2, minAge: time.Hour}
		cs := conns(3)
		for _, c := range cs {
			p.add(c)
		}
		if cs[0].closed || cs[1].closed || !cs[2].closed {
			t.Fatalf("closed = %v %v %v, want false false true", cs[0].closed, cs[1].closed, cs[2].closed)
		}
	})
	t.Run("old handshakes are evicted oldest first", func(t *testing.T) {
		p := &pendingSet{max: 2}
		cs := conns(3)
		var last *pendingConn
		for _, c := range cs {
			_, last = p.add(c)
		}
		if !cs[0].closed || cs[1].closed || cs[2].closed || last.evicted.Load() {
			t.Fatalf("closed = %v %v %v, want true false false", cs[0].closed, cs[1].closed, cs[2].closed)
		}
	})
}

type fakeConn struct {
	net.Conn
	closed bool
}

func (f *fakeConn) Close() error { f.closed = true; return nil }
