package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the data path's Prometheus collectors, all named medgate_*.
// Labels never carry PHI: routes, directions, reasons and verdicts only.
type Metrics struct {
	ConnsOpen      *prometheus.GaugeVec
	ConnsTotal     *prometheus.CounterVec
	Bytes          *prometheus.CounterVec
	Handshakes     *prometheus.CounterVec
	Admissions     *prometheus.CounterVec
	ConnDuration   *prometheus.HistogramVec
	HandshakeTime  prometheus.Histogram
	CapacityRefuse *prometheus.CounterVec
	QUICConns      prometheus.Gauge
	QUICStreams    *prometheus.CounterVec
	QUICPackets    *prometheus.CounterVec
	QUICRTT        prometheus.Histogram
}

// NewMetrics creates the collectors and registers them with reg when reg
// is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ConnsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "medgate_connections_open",
			Help: "Proxied connections open now, by route and direction (inbound, outbound).",
		}, []string{"route", "direction"}),
		ConnsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medgate_connections_total",
			Help: "Proxied connections ended, by route, direction and outcome.",
		}, []string{"route", "direction", "outcome"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medgate_bytes_total",
			Help: "Application bytes carried, by route and flow (app_to_peer, peer_to_app).",
		}, []string{"route", "flow"}),
		Handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medgate_tls_handshakes_total",
			Help: "TLS handshakes by side (accept, dial, accept_quic, dial_quic) and result (ok or the refusal reason).",
		}, []string{"side", "result"}),
		Admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medgate_admissions_total",
			Help: "Session admission decisions by route, verdict and first reason.",
		}, []string{"route", "verdict", "reason"}),
		ConnDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "medgate_connection_duration_seconds",
			Help:    "Lifetime of proxied connections.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}, []string{"route", "direction"}),
		HandshakeTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "medgate_session_setup_seconds",
			Help:    "Time from accepting or dialing a tunnel connection to the session's admission or refusal.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		CapacityRefuse: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medgate_capacity_refusals_total",
			Help: "Connections closed for capacity: sessions at the limit, or a pending handshake evicted by newer ones.",
		}, []string{"kind"}),
		QUICConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "medgate_quic_connections_open",
			Help: "QUIC connections open now, to and from other sidecars.",
		}),
		QUICStreams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medgate_quic_streams_total",
			Help: "QUIC streams (one per proxied connection), by side (open, accept).",
		}, []string{"side"}),
		QUICPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medgate_quic_packets_total",
			Help: "QUIC packets by kind (sent, received, lost), as quic-go counts them.",
		}, []string{"kind"}),
		QUICRTT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "medgate_quic_smoothed_rtt_seconds",
			Help:    "Smoothed RTT of live QUIC connections, sampled every 5s.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.ConnsOpen, m.ConnsTotal, m.Bytes, m.Handshakes, m.Admissions, m.ConnDuration, m.HandshakeTime, m.CapacityRefuse,
			m.QUICConns, m.QUICStreams, m.QUICPackets, m.QUICRTT)
	}
	return m
}
