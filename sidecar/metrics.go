package sidecar

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ipsecca/ipsecca/internal/atomicfile"
	"github.com/ipsecca/ipsecca/internal/buildinfo"
	"github.com/ipsecca/ipsecca/nssdb"
)

// metrics is what the sidecar knows about its node, as Prometheus reads it
// from the optional listener (Config.MetricsListen). A value not known yet
// (no pass, no CRL in NSS) is left out rather than shown as 0.
type metrics struct {
	mu          sync.Mutex
	lastSuccess time.Time
	drift       int
	driftKnown  bool
	crlThis     time.Time
	crlNext     time.Time
	certNode    string
	certSerial  string
	certEnd     time.Time
	reachable   int // -1: no call yet
}

var (
	descLastSuccess = prometheus.NewDesc("ipsecca_sidecar_last_success_timestamp_seconds",
		"When the last pass that left the NSS database correct ended, as a Unix time.", nil, nil)
	descDrift = prometheus.NewDesc("ipsecca_sidecar_nss_drift",
		"NSS entries the last pass found wrong or missing (repaired, or not when the pass failed) although the "+
			"certificate and CA bundle to deliver had not changed; 0 when the database matched.", nil, nil)
	descCRLThis = prometheus.NewDesc("ipsecca_sidecar_crl_this_update_timestamp_seconds",
		"ThisUpdate of the CRL the sidecar last imported into NSS, as a Unix time.", nil, nil)
	descCRLNext = prometheus.NewDesc("ipsecca_sidecar_crl_next_update_timestamp_seconds",
		"NextUpdate of the CRL the sidecar last imported into NSS, as a Unix time.", nil, nil)
	descCertEnd = prometheus.NewDesc("ipsecca_sidecar_certificate_expiration_timestamp_seconds",
		"NotAfter of the node's own certificate, as a Unix time.", []string{"node", "serial"}, nil)
	descReachable = prometheus.NewDesc("ipsecca_sidecar_ca_reachable",
		"1 when the CA answered the sidecar's last call (with --kube: the Kubernetes API server), 0 when the "+
			"call found it unreachable or timed out.", nil, nil)
)

func newMetrics() *metrics { return &metrics{reachable: -1} }

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLastSuccess, descDrift, descCRLThis, descCRLNext, descCertEnd,
		descReachable} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if !m.lastSuccess.IsZero() {
		gauge(descLastSuccess, unix(m.lastSuccess))
	}
	if m.driftKnown {
		gauge(descDrift, float64(m.drift))
	}
	if !m.crlThis.IsZero() {
		gauge(descCRLThis, unix(m.crlThis))
	}
	if !m.crlNext.IsZero() {
		gauge(descCRLNext, unix(m.crlNext))
	}
	if m.certSerial != "" {
		gauge(descCertEnd, unix(m.certEnd), m.certNode, m.certSerial)
	}
	if m.reachable >= 0 {
		gauge(descReachable, float64(m.reachable))
	}
}

func unix(t time.Time) float64 { return float64(t.Unix()) }

// registry holds the sidecar's metrics, its build and the process's.
func (m *metrics) registry() *prometheus.Registry {
	bi := buildinfo.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ipsecca_build_info",
		Help: "Always 1, labelled with the running build's module version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{
			"version":   bi.Version,
			"revision":  bi.Revision,
			"goversion": bi.GoVersion,
		},
	})
	build.Set(1)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m, build, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ServeMetrics serves /metrics on lis until ctx ends (Run does so on
// Config.MetricsListen).
func (a *Agent) ServeMetrics(ctx context.Context, lis net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.registry(), promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	a.log.Info("serving metrics", "addr", lis.Addr().String())
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("sidecar: metrics listener: %w", err)
	}
	return nil
}

// passDone records a pass that left NSS holding pair.
func (a *Agent) passDone(pair *Pair) {
	m := a.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastSuccess = a.cfg.Now()
	if pair != nil {
		m.certNode, m.certSerial, m.certEnd = a.cfg.Node, pair.Serial(), pair.Cert.NotAfter
	}
}

// verifyEvery is how often Run checks, between passes, that the NSS
// database still holds what the last pass left (certutil only, no call to
// the CA): passes come only on the CA's events and at the hourly resync,
// and the metrics must not wait that long to say a node is fine or not.
const verifyEvery = 5 * time.Minute

func (a *Agent) verifyLoop(ctx context.Context) {
	t := time.NewTicker(verifyEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.verify(ctx)
	}
}

// verify records a database found correct between passes (Check) as a
// success with no drift; a database found wrong leaves both as they were,
// for the next pass to repair and count.
func (a *Agent) verify(ctx context.Context) {
	if !a.busy.TryLock() {
		return // a pass runs: it records its own outcome
	}
	defer a.busy.Unlock()
	a.metrics.mu.Lock()
	first := a.metrics.lastSuccess.IsZero()
	a.metrics.mu.Unlock()
	if first {
		return // no pass has delivered yet: nothing to check against
	}
	unlock, err := a.db.Lock(ctx)
	if err != nil {
		return
	}
	defer unlock()
	if err := a.Check(ctx); err != nil {
		a.log.Warn("the NSS database no longer holds what the last pass left; the next pass repairs it", "err", err)
		return
	}
	pair, _ := a.state.Current()
	a.passDone(pair)
	a.metrics.mu.Lock()
	defer a.metrics.mu.Unlock()
	a.metrics.drift, a.metrics.driftKnown = 0, true
}

// noteCall records whether the CA answered a call made under ctx: a
// refusal is an answer; our own cancellation, or the end of a healthy
// Watch period, says nothing.
func (a *Agent) noteCall(ctx context.Context, err error) {
	v := 1
	switch {
	case err == nil:
	case status.Code(err) == codes.Canceled, errors.Is(context.Cause(ctx), errResync):
		return
	case status.Code(err) == codes.Unavailable, status.Code(err) == codes.DeadlineExceeded:
		v = 0
	}
	a.setReachable(v == 1)
}

func (a *Agent) setReachable(ok bool) {
	a.metrics.mu.Lock()
	defer a.metrics.mu.Unlock()
	a.metrics.reachable = 0
	if ok {
		a.metrics.reachable = 1
	}
}

// crlInNSSFile keeps the CRL last imported into NSS (DER), for its
// ThisUpdate and NextUpdate after a restart.
const crlInNSSFile = "crl-nss.der"

// crlImported records crl (DER der) as the CRL in NSS.
func (a *Agent) crlImported(der []byte, crl *x509.RevocationList) {
	if err := atomicfile.WriteFile(a.state.path(crlInNSSFile), der, 0o600); err != nil {
		a.log.Warn("could not keep a copy of the CRL imported", "err", err)
	}
	a.setCRL(crl)
}

func (a *Agent) setCRL(crl *x509.RevocationList) {
	a.metrics.mu.Lock()
	defer a.metrics.mu.Unlock()
	a.metrics.crlThis, a.metrics.crlNext = crl.ThisUpdate, crl.NextUpdate
}

// loadCRLMetrics reads the CRL a previous run imported into NSS.
func (a *Agent) loadCRLMetrics() {
	der, err := os.ReadFile(a.state.path(crlInNSSFile))
	if err != nil {
		return
	}
	if crl, err := x509.ParseRevocationList(der); err == nil {
		a.setCRL(crl)
	}
}

// driftProbe is a pass's view of the NSS database before it delivers:
// before is nil when the pass delivers a new certificate or CA bundle (a
// planned change, not drift).
type driftProbe struct {
	before map[string]string
}

// probeDrift lists the database before the delivery of pair and bundle
// when they are what the last pass delivered (prev, prevBundle).
func (a *Agent) probeDrift(ctx context.Context, prev, pair *Pair, prevBundle, bundle []byte) driftProbe {
	if prev == nil || pair == nil || !prev.Cert.Equal(pair.Cert) || string(prevBundle) != string(bundle) {
		return driftProbe{}
	}
	entries, err := a.db.List(ctx)
	if err != nil {
		return driftProbe{}
	}
	return driftProbe{before: entryStates(entries)}
}

// noteDrift counts the entries the delivery changed (changed, err are
// its outcome): at least one when it changed something, or failed.
func (a *Agent) noteDrift(ctx context.Context, p driftProbe, changed bool, err error) {
	n := 0
	switch {
	case p.before != nil && (changed || err != nil):
		if entries, lerr := a.db.List(ctx); lerr == nil {
			after := entryStates(entries)
			for nick, s := range p.before {
				if after[nick] != s {
					n++
				}
			}
			for nick := range after {
				if _, ok := p.before[nick]; !ok {
					n++
				}
			}
		}
		n = max(n, 1)
		a.log.Warn("the NSS database had drifted from what the sidecar keeps there", "entries", n,
			"repaired", err == nil)
	case err != nil:
		n = 1 // a new certificate or CA bundle that could not be delivered
	}
	a.metrics.mu.Lock()
	defer a.metrics.mu.Unlock()
	a.metrics.drift, a.metrics.driftKnown = n, true
}

// entryStates is each nickname's trust flags and certificate serials.
func entryStates(entries []nssdb.Entry) map[string]string {
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		var serials []string
		for _, c := range e.Certs {
			serials = append(serials, serialHex(c.SerialNumber))
		}
		slices.Sort(serials)
		trusts := slices.Clone(e.Trusts)
		slices.Sort(trusts)
		out[e.Nickname] = strings.Join(trusts, " ") + "|" + strings.Join(serials, ",")
	}
	return out
}
