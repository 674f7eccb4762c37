package kube

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the signer's Prometheus metrics.
type metrics struct {
	decisions *prometheus.CounterVec
	published *prometheus.CounterVec
	deleted   *prometheus.CounterVec
	bundle    *prometheus.CounterVec
	throttled prometheus.Counter
	latency   prometheus.Histogram
	leader    prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_csr_decisions_total",
			Help: "Kubernetes CSR decisions (approved, denied, failed) by condition reason."}, []string{"decision", "reason"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_csr_published_total",
			Help: "Certificates written to CSR status: new, or stored earlier (after a restart or by another replica)."}, []string{"source"}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_csr_deleted_total",
			Help: "Old CSRs deleted, by state (issued, denied, pending)."}, []string{"state"}),
		bundle: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_ca_bundle_writes_total",
			Help: "Writes of the CA bundle ConfigMap (created, updated, restored)."}, []string{"action"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{Name: "ipsecca_kube_csr_throttled_total",
			Help: "CSR decisions postponed by the per-node limit."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ipsecca_kube_issuance_duration_seconds",
			Help: "Time to check, issue and store a certificate for a CSR.", Buckets: []float64{.001, .002, .005, .01, .025, .05, .1, .25, .5, 1}}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ipsecca_kube_signer_leader",
			Help: "1 while this replica leads the Kubernetes signer."}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.decisions, m.published, m.deleted, m.bundle, m.throttled, m.latency, m.leader} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
