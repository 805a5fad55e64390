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
			Help: "TLS handshakes by side (accept, dial) and result (ok or the refusal reason).",
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
	}
	if reg != nil {
		reg.MustRegister(m.ConnsOpen, m.ConnsTotal, m.Bytes, m.Handshakes, m.Admissions, m.ConnDuration, m.HandshakeTime, m.CapacityRefuse)
	}
	return m
}
