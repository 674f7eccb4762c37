package kube

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
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

// pendingListTimeout bounds the list a replica that does not lead makes
// for a scrape.
const pendingListTimeout = 3 * time.Second

var (
	pendingDesc = prometheus.NewDesc("ipsecca_kube_csr_pending",
		"CSRs for this signer still waiting for it: no certificate, not denied, not failed.", nil, nil)
	oldestPendingDesc = prometheus.NewDesc("ipsecca_kube_csr_oldest_pending_timestamp_seconds",
		"Creation time of the oldest CSR still waiting for this signer (Unix time; 0 when none).", nil, nil)
)

// pendingCollector reports the CSRs waiting for the signer at each scrape:
// from the leader's cache, or, on a replica that does not lead, from a list
// served by the API server's cache. Every replica reports them, so a
// signer that answers nothing (no replica leads) still shows its backlog
// growing. Outside ModeFull the CSRs are another signer's: none reported.
type pendingCollector struct{ s *Signer }

func (c pendingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- oldestPendingDesc
}

func (c pendingCollector) Collect(ch chan<- prometheus.Metric) {
	if c.s.cfg.Mode != ModeFull {
		return
	}
	csrs, err := c.s.signerCSRs()
	if err != nil {
		c.s.log.Debug("list CSRs for the pending metrics", "err", err)
		return
	}
	n, oldest := 0, time.Time{}
	for _, r := range csrs {
		if finished(r) {
			continue
		}
		n++
		if t := r.CreationTimestamp.Time; oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	ts := 0.0
	if !oldest.IsZero() {
		ts = float64(oldest.Unix())
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(oldestPendingDesc, prometheus.GaugeValue, ts)
}

// signerCSRs are the CSRs of this signer: the leader's cache, else a list.
func (s *Signer) signerCSRs() ([]*certificatesv1.CertificateSigningRequest, error) {
	if t := s.active.Load(); t != nil {
		var out []*certificatesv1.CertificateSigningRequest
		for _, obj := range t.csrs.List() {
			if r, ok := obj.(*certificatesv1.CertificateSigningRequest); ok {
				out = append(out, r)
			}
		}
		return out, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), pendingListTimeout)
	defer cancel()
	l, err := s.cfg.Client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("spec.signerName", s.cfg.SignerName).String(),
		ResourceVersion: "0", // the API server's cache: cheap, and fresh enough for a gauge
	})
	if err != nil {
		return nil, err
	}
	out := make([]*certificatesv1.CertificateSigningRequest, 0, len(l.Items))
	for i := range l.Items {
		out = append(out, &l.Items[i])
	}
	return out, nil
}
