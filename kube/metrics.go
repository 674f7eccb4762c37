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
	crl       *prometheus.CounterVec
	nonNode   *prometheus.CounterVec
	throttled prometheus.Counter
	latency   prometheus.Histogram
	leader    prometheus.Gauge

	crlNextUpdate prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_csr_decisions_total",
			Help: "Kubernetes CSR decisions (approved, denied, failed) by condition reason."}, []string{"decision", "reason"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_csr_published_total",
			Help: "Certificates written to CSR status: new, or stored earlier (after a restart or by another replica)."},
			[]string{"source"}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_csr_deleted_total",
			Help: "Old CSRs deleted, by state (issued, denied, pending)."}, []string{"state"}),
		bundle: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_ca_bundle_writes_total",
			Help: "Writes of the CA bundle ConfigMap (created, updated, restored)."}, []string{"action"}),
		crl: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_crl_writes_total",
			Help: "Writes of the CRL into the CA bundle ConfigMap, by why (created, revocations, refresh, root, restored)."},
			[]string{"why"}),
		nonNode: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ipsecca_kube_csr_non_node_denials_total",
			Help: "CSRs denied because the requester is not an existing node (counted here, not audited one by one)."},
			[]string{"reason"}),
		crlNextUpdate: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ipsecca_kube_crl_next_update_timestamp_seconds",
			Help: "NextUpdate of the CRL in the CA bundle ConfigMap (Unix time)."}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{Name: "ipsecca_kube_csr_throttled_total",
			Help: "CSR decisions postponed by the per-node limit."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ipsecca_kube_issuance_duration_seconds",
			Help:    "Time to check, issue and store a certificate for a CSR.",
			Buckets: []float64{.001, .002, .005, .01, .025, .05, .1, .25, .5, 1}}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ipsecca_kube_signer_leader",
			Help: "1 while this replica leads the Kubernetes signer."}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.decisions, m.published, m.deleted, m.bundle, m.crl, m.nonNode, m.throttled,
		m.latency, m.leader, m.crlNextUpdate} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}
