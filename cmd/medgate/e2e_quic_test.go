package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func quicOutbound(t *testing.T, ca *testCA, id string, bundles []string, peer, transport string) *sidecar {
	t.Helper()
	env := outboundEnv(ca, id, peer, "spiffe://hospital.example/pacs")
	env["MEDGATE_TRUST_BUNDLE"] = strings.Join(bundles, ",")
	env["MEDGATE_OUTBOUND_TRANSPORT"] = transport
	return startSidecar(t, env)
}

func TestE2EQUIC(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	other := newTestCA(t, "other.example")
	app := startHashApp(t, false)
	in := startInbound(t, ca, app, nil)
	lab := quicOutbound(t, ca, "spiffe://hospital.example/lab/ws1", []string{ca.bundle()}, in.in, "quic")

	// 100 MB intact, with the canary inside.
	const size = 100 << 20
	msg := func() *strings.Reader { return strings.NewReader("PID|||4711||" + canary + "\r") }
	got, err := send(lab.out, io2(msg(), patterned(7, size)))
	if err != nil || got != hashOf(io2(msg(), patterned(7, size))) {
		t.Fatalf("100 MB over QUIC: %q, %v", got, err)
	}

	// 100 concurrent proxied connections, one QUIC connection.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf("object %d %s", i, strings.Repeat("x", 1000*i))
			got, err := send(lab.out, strings.NewReader(body))
			if err == nil && got != hashOf(strings.NewReader(body)) {
				err = fmt.Errorf("object %d changed", i)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	_, metrics := lab.get("/metrics")
	for _, want := range []string{`medgate_tls_handshakes_total{result="ok",side="dial_quic"} 1`, `medgate_quic_streams_total{side="open"} 101`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("outbound metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, `side="dial"}`) {
		t.Error("the outbound sidecar fell back to TCP")
	}

	// The same refusals as over TCP.
	billing := quicOutbound(t, ca, "spiffe://hospital.example/billing", []string{ca.bundle()}, in.in, "quic")
	foreign := quicOutbound(t, other, "spiffe://other.example/lab/ws1", []string{other.bundle(), "hospital.example=" + ca.bundle()}, in.in, "quic")
	for id, sc := range map[string]*sidecar{"spiffe://hospital.example/billing": billing, "spiffe://other.example/lab/ws1": foreign} {
		if _, err := send(sc.out, strings.NewReader("must not arrive")); err == nil {
			t.Errorf("%s moved data over QUIC", id)
		}
	}
	for id, reason := range map[string]string{"spiffe://hospital.example/billing": "id_not_allowed", "spiffe://other.example/lab/ws1": "unknown_trust_domain"} {
		if evs := in.eventsWith(func(e map[string]any) bool { return e["peer_id"] == id && hasReason(e, reason) }); len(evs) == 0 {
			t.Errorf("no deny event for %s with %s", id, reason)
		}
	}

	// The remote sidecar restarts on the same port: new connections succeed.
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	startInbound(t, ca, app, map[string]string{"MEDGATE_INBOUND_LISTEN": in.in})
	waitUntil(t, 20*time.Second, func() bool {
		got, err := send(lab.out, strings.NewReader("after restart"))
		return err == nil && got == hashOf(strings.NewReader("after restart"))
	})
}

func TestE2EAutoFallsBackToTCP(t *testing.T) {
	ca := newTestCA(t, "hospital.example")
	app := startHashApp(t, false)
	in := startInbound(t, ca, app, map[string]string{"MEDGATE_INBOUND_QUIC": "off"}) // UDP does not get through
	lab := quicOutbound(t, ca, "spiffe://hospital.example/lab/ws1", []string{ca.bundle()}, in.in, "auto")
	for i := range 3 {
		body := strings.Repeat("y", 1<<20+i)
		if got, err := send(lab.out, strings.NewReader(body)); err != nil || got != hashOf(strings.NewReader(body)) {
			t.Fatalf("auto route: %q, %v", got, err)
		}
	}
	_, metrics := lab.get("/metrics")
	for _, want := range []string{`medgate_tls_handshakes_total{result="ok",side="dial"} 3`, `medgate_tls_handshakes_total{result="peer_unreachable",side="dial_quic"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(lab.logs.String(), "falling back to TCP") {
		t.Error("the fallback is not logged")
	}
}
