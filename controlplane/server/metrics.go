package server

import "github.com/prometheus/client_golang/prometheus"

// metrics are the control plane's Prometheus metrics.
type metrics struct {
	connected prometheus.Gauge
	responses *prometheus.CounterVec // by result: ack, nack
	events    prometheus.Counter
	failed    prometheus.Counter
	refused   *prometheus.CounterVec // by api: ads, events, admin

	refusalsCounted  prometheus.Counter
	refusalsUnstored prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "medgate_cp_sidecars_connected",
			Help: "Sidecars with a policy subscription open on this replica.",
		}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medgate_cp_policy_responses_total",
			Help: "Policy versions sidecars applied (ack) or refused (nack).",
		}, []string{"result"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medgate_cp_events_stored_total",
			Help: "Access events received in batches the audit store committed (a resent event the store skips counts again).",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medgate_cp_event_batches_failed_total",
			Help: "Batches of access events the store did not commit; the sidecar keeps them and sends them again.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "medgate_cp_refused_total",
			Help: "Calls refused for the caller's identity or node ID.",
		}, []string{"api"}),
		refusalsCounted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medgate_cp_refusals_counted_total",
			Help: "Refused calls over the per-minute limit of access events for them; each minute's count is stored as one event.",
		}),
		refusalsUnstored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "medgate_cp_refusal_events_unstored_total",
			Help: "Access events for refused calls the audit store did not take (each is also in the log).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.responses, m.events, m.failed, m.refused, m.refusalsCounted, m.refusalsUnstored)
	}
	return m
}
