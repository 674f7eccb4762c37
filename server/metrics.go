package server

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/store"
)

// MetricsStore is what the metrics read from the store.
type MetricsStore interface {
	CertCounts(ctx context.Context, now time.Time) (map[[2]string]int, error)
	NextTimes(ctx context.Context) (rotate, grace time.Time, err error)
	OverdueCount(ctx context.Context) (int, error)
}

// TxnStats is what a store reports about its write transactions (both
// backends batch several requests into one).
type TxnStats interface {
	// Stats returns the write transactions committed and those refused
	// because another replica wrote first (always 0 for bbolt).
	Stats() (commits, conflicts uint64)
}

// registerTxnStats exports st's transaction counters.
func (m *metrics) registerTxnStats(st TxnStats) {
	m.registry.MustRegister(
		prometheus.NewCounterFunc(
			prometheus.CounterOpts{
				Name: "ipsecca_store_transactions_total",
				Help: "Write transactions the store committed (each may hold many requests).",
			},
			func() float64 { c, _ := st.Stats(); return float64(c) },
		),
		prometheus.NewCounterFunc(
			prometheus.CounterOpts{
				Name: "ipsecca_store_conflicts_total",
				Help: "Write transactions refused because another replica wrote first (run again on fresh reads).",
			},
			func() float64 { _, c := st.Stats(); return float64(c) },
		),
	)
}

// metrics are the service's Prometheus metrics.
type metrics struct {
	issued   *prometheus.CounterVec
	denials  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	tokens   *prometheus.CounterVec
	registry *prometheus.Registry
}

// tokenEvent counts n bootstrap-token events: created, used, revoked.
func (m *metrics) tokenEvent(event string, n int) {
	m.tokens.WithLabelValues(event).Add(float64(n))
}

func newMetrics() *metrics {
	m := &metrics{
		issued: prometheus.NewCounterVec(
			prometheus.CounterOpts{
				Name: "ipsecca_certificates_issued_total",
				Help: "Node certificates issued, by path (token, renewal).",
			},
			[]string{"via"},
		),
		denials: prometheus.NewCounterVec(
			prometheus.CounterOpts{Name: "ipsecca_denials_total", Help: "Denied requests, by stable reason."},
			[]string{"reason"},
		),
		latency: prometheus.NewHistogramVec(
			prometheus.HistogramOpts{
				Name:    "ipsecca_issuance_duration_seconds",
				Help:    "Time to issue and durably store a node certificate.",
				Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1},
			},
			[]string{"via"},
		),
		tokens: prometheus.NewCounterVec(
			prometheus.CounterOpts{
				Name: "ipsecca_tokens_total",
				Help: "Bootstrap tokens by event: created, used (an enrollment that presented one), revoked.",
			},
			[]string{"event"},
		),
		registry: prometheus.NewRegistry(),
	}
	// Present from the start, so rate() and absent() behave before the first event.
	for _, ev := range []string{"created", "used", "revoked"} {
		m.tokens.WithLabelValues(ev)
	}
	m.registry.MustRegister(
		m.issued,
		m.denials,
		m.latency,
		m.tokens,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// stateCollector reports certificate counts and schedule gauges at scrape
// time, caching the certificate count (a full scan) for a while.
type stateCollector struct {
	st    MetricsStore
	auth  Authority
	hub   *Hub
	clock ca.Clock

	mu     sync.Mutex
	counts map[[2]string]int
	at     time.Time
	mesh   map[string]int // pairs by state
	meshAt time.Time
}

var (
	descCerts = prometheus.NewDesc(
		"ipsecca_certificates",
		"Stored certificates by kind and state.",
		[]string{"kind", "state"},
		nil,
	)
	descNextDue = prometheus.NewDesc(
		"ipsecca_rotation_next_due_seconds",
		"Seconds until the next scheduled rotation (negative: overdue work pending).",
		nil,
		nil,
	)
	descOverdue = prometheus.NewDesc(
		"ipsecca_rotation_overdue",
		"Certificates due for rotation whose grace ended without a renewal.",
		nil,
		nil,
	)
	descCAEnd = prometheus.NewDesc(
		"ipsecca_ca_expiry_timestamp_seconds",
		"NotAfter of the current root, as a Unix time.",
		nil,
		nil,
	)
	descCARenewBy = prometheus.NewDesc(
		"ipsecca_ca_renew_by_timestamp_seconds",
		"A subordinate CA's renew_by, as a Unix time: from then on node certificates end with the CA's "+
			"certificate; its issuer should renew it (ipsecca ca import). Absent for a self-signed root.",
		nil,
		nil,
	)
	descRollover = prometheus.NewDesc(
		"ipsecca_ca_rollover_phase",
		"1 for the phase of the CA key rollover in progress (request, trust, issue, retire), 0 for the others.",
		[]string{"phase"},
		nil,
	)
	descWatch = prometheus.NewDesc("ipsecca_watch_streams", "Open Watch streams (connected sidecars).", nil, nil)
	descMesh  = prometheus.NewDesc(
		"ipsecca_mesh_pairs",
		"Node pairs the sidecars report, by state (current, old-root, superseded, revoked, expired, unknown, down).",
		[]string{"state"},
		nil,
	)
)

// countsTTL bounds how stale the certificate counts and the mesh pairs may be.
const countsTTL = 30 * time.Second

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCerts, descNextDue, descOverdue, descCAEnd, descWatch, descMesh,
		descCARenewBy, descRollover} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx := context.Background()
	now := c.clock.Now()
	c.mu.Lock()
	if c.counts == nil || now.Sub(c.at) > countsTTL {
		if counts, err := c.st.CertCounts(ctx, now); err == nil {
			c.counts, c.at = counts, now
		}
	}
	for k, n := range c.counts {
		ch <- prometheus.MustNewConstMetric(descCerts, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	if c.mesh == nil || now.Sub(c.meshAt) > countsTTL {
		if mesh, err := c.auth.MeshStatus(ctx, now); err == nil {
			c.mesh, c.meshAt = mesh.Counts(), now
		}
	}
	for state, n := range c.mesh {
		ch <- prometheus.MustNewConstMetric(descMesh, prometheus.GaugeValue, float64(n), state)
	}
	c.mu.Unlock()
	if rot, _, err := c.st.NextTimes(ctx); err == nil && !rot.IsZero() {
		ch <- prometheus.MustNewConstMetric(descNextDue, prometheus.GaugeValue, rot.Sub(now).Seconds())
	}
	if n, err := c.st.OverdueCount(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descOverdue, prometheus.GaugeValue, float64(n))
	}
	root := c.auth.Root()
	ch <- prometheus.MustNewConstMetric(descCAEnd, prometheus.GaugeValue, float64(root.Cert.NotAfter.Unix()))
	if _, renewBy, _ := root.SubordinateInfo(now); !renewBy.IsZero() {
		ch <- prometheus.MustNewConstMetric(descCARenewBy, prometheus.GaugeValue, float64(renewBy.Unix()))
	}
	for _, phase := range []string{store.RolloverRequest, store.RolloverTrust, store.RolloverIssue,
		store.RolloverRetire} {
		v := 0.0
		if root.Rollover != nil && root.Rollover.Phase == phase {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRollover, prometheus.GaugeValue, v, phase)
	}
	ch <- prometheus.MustNewConstMetric(descWatch, prometheus.GaugeValue, float64(c.hub.Watchers()))
}

// MetricsRegistry is where the service's metrics live: other front doors
// (the Kubernetes signer) add theirs to it, and the process serves it.
func (s *Server) MetricsRegistry() *prometheus.Registry { return s.metrics.registry }
