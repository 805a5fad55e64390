package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy"
	"github.com/medgate/medgate/proxy/hl7"
	"github.com/medgate/medgate/proxy/mask"
)

// egressDeidentify de-identifies what outbound routes send and admits
// inbound sessions as they are.
type egressDeidentify struct{}

func (egressDeidentify) Decide(req posture.Request) posture.Decision {
	if req.Direction == posture.Outbound {
		return posture.Decision{Verdict: posture.Deidentify, Profile: "hipaa-safe-harbor", Reasons: []posture.Reason{posture.ReasonDeidentified}, PolicyVersion: "t1"}
	}
	return posture.Decision{Verdict: posture.Allow, Reasons: []posture.Reason{posture.ReasonAllowed}, PolicyVersion: "t1"}
}

func hl7Codec(p *mask.Profile, env mask.Env, _ bool) (mask.Filter, mask.Filter, error) {
	c, err := hl7.New(p, env, hl7.Config{})
	if err != nil {
		return nil, nil, err
	}
	return c.Filter, nil, nil
}

// mllpReceiver records each message and acknowledges it.
func mllpReceiver(t *testing.T) (string, func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var got []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := hl7.NewReader(c, 0)
				for {
					msg, err := r.ReadFrame()
					if err != nil {
						return
					}
					mu.Lock()
					got = append(got, string(msg))
					mu.Unlock()
					hl7.WriteFrame(c, []byte("MSH|^~\\&|RCV|HOSP|SND|LAB|20261122||ACK|1|P|2.5\rMSA|AA|1\r"))
				}
			}()
		}
	}()
	return ln.Addr().String(), func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }
}

// maskedHL7Pair runs an outbound sidecar that decides with decider and
// masks HL7 with the built-in profiles, and an inbound one in front of an
// MLLP receiver. It returns the outbound address, what the receiver got,
// and the outbound side's events.
func maskedHL7Pair(t *testing.T, decider posture.Decider) (string, func() []string, *eventLog) {
	t.Helper()
	eu := newPKI(t, "eu.example")
	server := eu.source("spiffe://eu.example/ris")
	receiver, received := mllpReceiver(t)
	keyer, _ := pseudonym.New(bytes.Repeat([]byte{7}, pseudonym.KeySize))
	profiles := func(name string) (*mask.Profile, error) {
		p, ok := mask.Builtin(name)
		if !ok {
			t.Fatalf("no profile %s", name)
		}
		return p, nil
	}
	events := &eventLog{}
	in := start(t, proxy.Config{Inbound: []proxy.InboundRoute{{Name: "default", Listen: "127.0.0.1:0", Upstream: receiver, Allow: patterns(t, "spiffe://eu.example/*")}}},
		proxy.Deps{Source: server})
	out := start(t, proxy.Config{Outbound: []proxy.OutboundRoute{{Name: "default", Listen: "127.0.0.1:0", Peer: in.InboundAddr("127.0.0.1:0").String(), PeerID: server.svid.ID, Protocol: "hl7"}}},
		proxy.Deps{Source: eu.source("spiffe://eu.example/sender"), Decider: decider, Events: events.sink,
			Codecs: map[string]proxy.Codec{"hl7": hl7Codec}, Profiles: profiles, MaskEnv: mask.Env{Keyer: keyer}})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go in.Run(ctx)
	go out.Run(ctx)
	return out.OutboundAddr("default").String(), received, events
}

func TestMaskedHL7Route(t *testing.T) {
	out, received, events := maskedHL7Pair(t, egressDeidentify{})
	c, err := net.Dial("tcp", out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := "MSH|^~\\&|LAB|HOSP|RIS|EU|20261122101500||ADT^A01|MSG00001|P|2.5\rPID|1||4711^^^HOSP^MR||ZEBULON^QUIXOTE||19700101|F|||1 Main St^^Springfield^IL^62701\rNK1|1|QUIXOTE^MARTA|SPO\r"
	io.WriteString(c, "\x0b"+msg+"\x1c\x0d")
	ack := make([]byte, 256)
	n, err := c.Read(ack)
	if err != nil || !strings.Contains(string(ack[:n]), "MSA|AA") {
		t.Fatalf("no ACK back to the sender: %q, %v", ack[:n], err)
	}
	got := received()
	if len(got) != 1 {
		t.Fatalf("receiver got %d messages", len(got))
	}
	for _, phi := range []string{"ZEBULON", "QUIXOTE", "4711", "19700101", "Main St"} {
		if strings.Contains(got[0], phi) {
			t.Errorf("%q crossed unmasked: %q", phi, got[0])
		}
	}
	if !strings.Contains(got[0], "ADT^A01") {
		t.Errorf("message type lost: %q", got[0])
	}

	// Garbage in a frame: a negative ACK to the sender, nothing delivered,
	// the session ends as unmaskable.
	io.WriteString(c, "\x0bthis is not HL7 at all\x1c\x0d")
	n, _ = c.Read(ack)
	if !strings.Contains(string(ack[:n]), "MSA|AR") && !strings.Contains(string(ack[:n]), "MSA|AE") {
		t.Errorf("no negative ACK for garbage: %q", ack[:n])
	}
	if len(received()) != 1 {
		t.Error("garbage reached the receiver")
	}
	waitFor(t, func() bool {
		ends := events.find("session_end", "outbound")
		return len(ends) == 1 && ends[0].Outcome == "unmaskable"
	})
	objs := events.find("object", "outbound")
	if len(objs) != 1 || objs[0].Object.Operation != "ADT^A01" || objs[0].Object.PatientPseudonym == "" || objs[0].Object.SHA256 == "" {
		t.Errorf("object events = %+v", objs)
	}
}
