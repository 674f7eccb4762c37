package server

import (
	"context"
	"crypto/x509"
	"errors"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/buildinfo"
	"github.com/ipsecca/ipsecca/store"
)

// MetricsStore is what the metrics read from the store.
type MetricsStore interface {
	CertCounts(ctx context.Context, now time.Time) (map[[2]string]int, error)
	NextTimes(ctx context.Context) (rotate, grace time.Time, err error)
	OverdueCount(ctx context.Context) (int, error)
	NodeInfos(ctx context.Context) ([]*store.NodeInfo, error)
	CurrentCert(ctx context.Context, node string) (*store.Cert, error)
}

// rootRenewer says when a self-signed root is due for renewal (the
// rotation scheduler's policy).
type rootRenewer interface {
	RootRenewAt(root *x509.Certificate) time.Time
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
	grpc     *grpcprom.ServerMetrics
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
		grpc:     newGRPCMetrics(),
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
		m.grpc,
		buildInfoGauge(),
		fips140Gauge(),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// buildInfoGauge is ipsecca_build_info: 1, labelled with the running build.
func buildInfoGauge() prometheus.Collector {
	bi := buildinfo.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ipsecca_build_info",
		Help: "Always 1, labelled with the running build's module version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{
			"version":   bi.Version,
			"revision":  bi.Revision,
			"goversion": bi.GoVersion,
		},
	})
	g.Set(1)
	return g
}

// fips140Gauge is ipsecca_fips140_enabled: 1 when the process runs in FIPS
// 140-3 mode, labelled with the mode (on, or only when every algorithm that
// is not approved is refused) and the module's version.
func fips140Gauge() prometheus.Collector {
	bi := buildinfo.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ipsecca_fips140_enabled",
		Help: "1 when the CA runs in FIPS 140-3 mode (GODEBUG=fips140=on or only), else 0; labelled with the mode " +
			"and the Go Cryptographic Module's version.",
		ConstLabels: prometheus.Labels{"mode": bi.FIPS140, "module": bi.FIPS140Module},
	})
	if bi.FIPS140 != "off" {
		g.Set(1)
	}
	return g
}

// stateCollector reports certificate counts and schedule gauges at scrape
// time, caching the certificate count (a full scan) for a while.
type stateCollector struct {
	st     MetricsStore
	auth   Authority
	hub    *Hub
	clock  ca.Clock
	policy rootRenewer

	mu      sync.Mutex
	counts  map[[2]string]int
	at      time.Time
	mesh    map[string]int // pairs by state
	meshAt  time.Time
	nodes   []nodeState
	nodesAt time.Time
}

// nodeState is what the metrics show of one node.
type nodeState struct {
	name       string
	cert       *store.Cert // current node certificate; nil when none
	reportedAt time.Time   // zero: its sidecar never reported, or the node is revoked or forgotten
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
	descNextDueAt = prometheus.NewDesc(
		"ipsecca_rotation_next_due_timestamp_seconds",
		"Earliest rotation due time of a node's current certificate, as a Unix time (in the past: due and not "+
			"yet rotated). When no node holds a certificate, the CA's own: a subordinate's renew_by, or when a "+
			"self-signed root renews itself.",
		nil,
		nil,
	)
	descCAEnd = prometheus.NewDesc(
		"ipsecca_ca_expiry_timestamp_seconds",
		"NotAfter of the CA's certificates, as a Unix time: ca=\"root\" for the self-signed root (the "+
			"organisation's, above a subordinate CA), ca=\"issuing\" for a subordinate CA that signs node certificates.",
		[]string{"ca"},
		nil,
	)
	descCertEnd = prometheus.NewDesc(
		"ipsecca_certificate_expiration_timestamp_seconds",
		"NotAfter of each node's current certificate, as a Unix time.",
		[]string{"node", "serial"},
		nil,
	)
	descCertDue = prometheus.NewDesc(
		"ipsecca_certificate_rotation_due_timestamp_seconds",
		"When each node's current certificate is due for rotation, as a Unix time.",
		[]string{"node", "serial"},
		nil,
	)
	descLastReport = prometheus.NewDesc(
		"ipsecca_node_last_report_timestamp_seconds",
		"When each node's sidecar last reported its NSS inventory, as a Unix time (absent for a node that "+
			"never reported, and for revoked or forgotten nodes).",
		[]string{"node"},
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
		descCARenewBy, descRollover, descNextDueAt, descCertEnd, descCertDue, descLastReport} {
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
	if c.nodes == nil || now.Sub(c.nodesAt) > countsTTL {
		if nodes, err := c.nodeStates(ctx); err == nil {
			c.nodes, c.nodesAt = nodes, now
		}
	}
	var nextDue time.Time
	for _, n := range c.nodes {
		if !n.reportedAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(descLastReport, prometheus.GaugeValue, unix(n.reportedAt), n.name)
		}
		if n.cert == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descCertEnd, prometheus.GaugeValue, unix(n.cert.NotAfter), n.name,
			n.cert.Serial)
		ch <- prometheus.MustNewConstMetric(descCertDue, prometheus.GaugeValue, unix(n.cert.RotateAfter), n.name,
			n.cert.Serial)
		if nextDue.IsZero() || n.cert.RotateAfter.Before(nextDue) {
			nextDue = n.cert.RotateAfter
		}
	}
	c.mu.Unlock()
	root := c.auth.Root()
	_, renewBy, _ := root.SubordinateInfo(now)
	if nextDue.IsZero() {
		nextDue = renewBy
		if !root.Subordinate() {
			nextDue = c.policy.RootRenewAt(root.Cert)
		}
	}
	ch <- prometheus.MustNewConstMetric(descNextDueAt, prometheus.GaugeValue, unix(nextDue))
	if rot, _, err := c.st.NextTimes(ctx); err == nil && !rot.IsZero() {
		ch <- prometheus.MustNewConstMetric(descNextDue, prometheus.GaugeValue, rot.Sub(now).Seconds())
	}
	if n, err := c.st.OverdueCount(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descOverdue, prometheus.GaugeValue, float64(n))
	}
	if root.Subordinate() {
		top := root.Chain[len(root.Chain)-1]
		ch <- prometheus.MustNewConstMetric(descCAEnd, prometheus.GaugeValue, unix(top.NotAfter), "root")
		ch <- prometheus.MustNewConstMetric(descCAEnd, prometheus.GaugeValue, unix(root.Cert.NotAfter), "issuing")
	} else {
		ch <- prometheus.MustNewConstMetric(descCAEnd, prometheus.GaugeValue, unix(root.Cert.NotAfter), "root")
	}
	if !renewBy.IsZero() {
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

// nodeStates reads every node's current certificate and last report.
func (c *stateCollector) nodeStates(ctx context.Context) ([]nodeState, error) {
	infos, err := c.st.NodeInfos(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]nodeState, 0, len(infos))
	for _, info := range infos {
		n := nodeState{name: info.Name}
		if !info.Revoked && info.ForgottenAt.IsZero() {
			n.reportedAt = info.ReportedAt
		}
		cur, err := c.st.CurrentCert(ctx, info.Name)
		switch {
		case err == nil:
			n.cert = cur
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func unix(t time.Time) float64 { return float64(t.Unix()) }

// MetricsRegistry is where the service's metrics live: other front doors
// (the Kubernetes signer) add theirs to it, and the process serves it.
func (s *Server) MetricsRegistry() *prometheus.Registry { return s.metrics.registry }
