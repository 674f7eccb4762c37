package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/buildinfo"
	"github.com/ipsecca/ipsecca/internal/testclock"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/rotation"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// sample is the value of the series of name with labels (nil when absent).
func sample(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) *float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metric:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			v := value(m)
			return &v
		}
	}
	return nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

// The CA's metrics as a scrape shows them: build, CA expiry, the next due
// rotation (the root's renewal while no node holds a certificate), each
// node's certificate expiry and due time and last report, token events,
// and the gRPC server's calls by method and code, refusals included.
func TestCAMetrics(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	reg := c.in.Server.MetricsRegistry()
	root := c.in.Authority.Root().Cert
	bi := buildinfo.Get()
	compare := func(when, want string, names ...string) {
		t.Helper()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
			t.Errorf("%s: %v", when, err)
		}
	}
	compare("at start", fmt.Sprintf(`
# HELP ipsecca_build_info Always 1, labelled with the running build's module version, VCS revision and Go version.
# TYPE ipsecca_build_info gauge
ipsecca_build_info{goversion=%q,revision=%q,version=%q} 1
# HELP ipsecca_ca_expiry_timestamp_seconds NotAfter of the CA's certificates, as a Unix time: ca="root" for the self-signed root (the organisation's, above a subordinate CA), ca="issuing" for a subordinate CA that signs node certificates.
# TYPE ipsecca_ca_expiry_timestamp_seconds gauge
ipsecca_ca_expiry_timestamp_seconds{ca="root"} %d
# HELP ipsecca_rotation_next_due_timestamp_seconds Earliest rotation due time of a node's current certificate, as a Unix time (in the past: due and not yet rotated). When no node holds a certificate, the CA's own: a subordinate's renew_by, or when a self-signed root renews itself.
# TYPE ipsecca_rotation_next_due_timestamp_seconds gauge
ipsecca_rotation_next_due_timestamp_seconds %d
# HELP ipsecca_tokens_total Bootstrap tokens by event: created, used (an enrollment that presented one), revoked.
# TYPE ipsecca_tokens_total counter
ipsecca_tokens_total{event="created"} 0
ipsecca_tokens_total{event="revoked"} 0
ipsecca_tokens_total{event="used"} 0
`, bi.GoVersion, bi.Revision, bi.Version, root.NotAfter.Unix(), rotation.DefaultPolicy.RootRenewAt(root).Unix()),
		"ipsecca_build_info", "ipsecca_ca_expiry_timestamp_seconds", "ipsecca_rotation_next_due_timestamp_seconds",
		"ipsecca_tokens_total", "ipsecca_certificate_expiration_timestamp_seconds",
		"ipsecca_certificate_rotation_due_timestamp_seconds", "ipsecca_node_last_report_timestamp_seconds")

	nodeA := c.enrollNode(t, "node-a")
	c.clock.Add(time.Hour)
	nodeB := c.enrollNode(t, "node-b")
	if _, err := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t))).
		CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-c"}); err != nil {
		t.Fatal(err)
	}
	c.clock.Add(countsTTL) // past the cache of the first scrape
	reportedAt := c.clock.Now()
	if _, err := ipseccav1.NewNodeServiceClient(c.conn(t, nodeA)).
		ReportInventory(ctx, &ipseccav1.ReportInventoryRequest{}); err != nil {
		t.Fatal(err)
	}
	// Refused calls: a node calling an admin method, and an anonymous one.
	for want, cert := range map[codes.Code]*tls.Certificate{codes.PermissionDenied: nodeB, codes.Unauthenticated: nil} {
		_, err := ipseccav1.NewAdminServiceClient(c.conn(t, cert)).
			CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "x"})
		if status.Code(err) != want {
			t.Fatalf("CreateToken: %v; want %s", err, want)
		}
	}
	c.clock.Add(time.Second)

	serialA, serialB := ca.SerialString(nodeA.Leaf.SerialNumber), ca.SerialString(nodeB.Leaf.SerialNumber)
	due := func(node string) int64 {
		cur, err := c.in.Server.queries.CurrentCert(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		return cur.RotateAfter.Unix()
	}
	compare("after two enrollments", fmt.Sprintf(`
# HELP ipsecca_certificate_expiration_timestamp_seconds NotAfter of each node's current certificate, as a Unix time.
# TYPE ipsecca_certificate_expiration_timestamp_seconds gauge
ipsecca_certificate_expiration_timestamp_seconds{node="node-a",serial=%[1]q} %[3]d
ipsecca_certificate_expiration_timestamp_seconds{node="node-b",serial=%[2]q} %[4]d
# HELP ipsecca_certificate_rotation_due_timestamp_seconds When each node's current certificate is due for rotation, as a Unix time.
# TYPE ipsecca_certificate_rotation_due_timestamp_seconds gauge
ipsecca_certificate_rotation_due_timestamp_seconds{node="node-a",serial=%[1]q} %[5]d
ipsecca_certificate_rotation_due_timestamp_seconds{node="node-b",serial=%[2]q} %[6]d
# HELP ipsecca_node_last_report_timestamp_seconds When each node's sidecar last reported its NSS inventory, as a Unix time (absent for a node that never reported, and for revoked or forgotten nodes).
# TYPE ipsecca_node_last_report_timestamp_seconds gauge
ipsecca_node_last_report_timestamp_seconds{node="node-a"} %[7]d
# HELP ipsecca_rotation_next_due_timestamp_seconds Earliest rotation due time of a node's current certificate, as a Unix time (in the past: due and not yet rotated). When no node holds a certificate, the CA's own: a subordinate's renew_by, or when a self-signed root renews itself.
# TYPE ipsecca_rotation_next_due_timestamp_seconds gauge
ipsecca_rotation_next_due_timestamp_seconds %[5]d
# HELP ipsecca_tokens_total Bootstrap tokens by event: created, used (an enrollment that presented one), revoked.
# TYPE ipsecca_tokens_total counter
ipsecca_tokens_total{event="created"} 3
ipsecca_tokens_total{event="revoked"} 0
ipsecca_tokens_total{event="used"} 2
`, serialA, serialB, nodeA.Leaf.NotAfter.Unix(), nodeB.Leaf.NotAfter.Unix(), due("node-a"), due("node-b"),
		reportedAt.Unix()),
		"ipsecca_certificate_expiration_timestamp_seconds", "ipsecca_certificate_rotation_due_timestamp_seconds",
		"ipsecca_node_last_report_timestamp_seconds", "ipsecca_rotation_next_due_timestamp_seconds",
		"ipsecca_tokens_total")
	if due("node-a") >= due("node-b") {
		t.Errorf("node-a, enrolled first, is due at %d, not before node-b (%d)", due("node-a"), due("node-b"))
	}

	grpcCases := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"CreateToken OK", map[string]string{"grpc_method": "CreateToken", "grpc_code": "OK"}, 3},
		{"CreateToken by a node", map[string]string{"grpc_method": "CreateToken", "grpc_code": "PermissionDenied"}, 1},
		{"CreateToken anonymous", map[string]string{"grpc_method": "CreateToken", "grpc_code": "Unauthenticated"}, 1},
		{"Enroll OK", map[string]string{"grpc_service": "ipsecca.v1.NodeService", "grpc_method": "Enroll",
			"grpc_type": "unary", "grpc_code": "OK"}, 2},
		{"never called: present at 0", map[string]string{"grpc_method": "RevokeNode", "grpc_code": "Internal"}, 0},
	}
	for _, tc := range grpcCases {
		if got := sample(t, reg, "grpc_server_handled_total", tc.labels); got == nil || *got != tc.want {
			t.Errorf("grpc_server_handled_total %s: %v; want %v", tc.name, got, tc.want)
		}
	}
	if got := sample(t, reg, "grpc_server_handling_seconds", map[string]string{"grpc_method": "CreateToken"}); got == nil ||
		*got != 5 {
		t.Errorf("grpc_server_handling_seconds CreateToken count %v; want 5", got)
	}
	if got := sample(t, reg, "grpc_server_started_total", map[string]string{"grpc_method": "Enroll"}); got == nil ||
		*got != 2 {
		t.Errorf("grpc_server_started_total Enroll %v; want 2", got)
	}

	// A revoked node's certificate and report leave the metrics.
	if _, err := c.in.Authority.RevokeNode(ctx, "node-a", "test", "test"); err != nil {
		t.Fatal(err)
	}
	c.clock.Add(countsTTL + time.Second)
	compare("after revoking node-a", fmt.Sprintf(`
# HELP ipsecca_certificate_expiration_timestamp_seconds NotAfter of each node's current certificate, as a Unix time.
# TYPE ipsecca_certificate_expiration_timestamp_seconds gauge
ipsecca_certificate_expiration_timestamp_seconds{node="node-b",serial=%q} %d
# HELP ipsecca_rotation_next_due_timestamp_seconds Earliest rotation due time of a node's current certificate, as a Unix time (in the past: due and not yet rotated). When no node holds a certificate, the CA's own: a subordinate's renew_by, or when a self-signed root renews itself.
# TYPE ipsecca_rotation_next_due_timestamp_seconds gauge
ipsecca_rotation_next_due_timestamp_seconds %d
`, serialB, nodeB.Leaf.NotAfter.Unix(), due("node-b")),
		"ipsecca_certificate_expiration_timestamp_seconds", "ipsecca_node_last_report_timestamp_seconds",
		"ipsecca_rotation_next_due_timestamp_seconds")
}

// A subordinate CA reports both its own expiry (issuing) and its
// organisation root's (root); with no node certificate the next due
// rotation is its renew_by.
func TestSubordinateCAMetrics(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	t0 := time.Now().Truncate(time.Second)
	clock := testclock.New(t0)
	req, err := ca.InitSubordinate(ctx, st, ca.RootConfig{}, clock, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(req.CSRPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	orgKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	orgTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "org root"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.AddDate(20, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	orgDER, err := x509.CreateCertificate(rand.Reader, orgTmpl, orgTmpl, orgKey.Public(), orgKey)
	if err != nil {
		t.Fatal(err)
	}
	org, _ := x509.ParseCertificate(orgDER)
	subTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: csr.Subject, NotBefore: t0.Add(-time.Hour),
		NotAfter: t0.AddDate(7, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	subDER, err := x509.CreateCertificate(rand.Reader, subTmpl, org, csr.PublicKey, orgKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ImportSubordinate(ctx, st, nil, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: subDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: orgDER}), clock.Now(), "test"); err != nil {
		t.Fatal(err)
	}
	root, _, err := ca.Bootstrap(ctx, st, ca.RootConfig{}, clock)
	if err != nil {
		t.Fatal(err)
	}
	auth := ca.New(st, root, ca.Config{Clock: clock, Rand: rand.Reader, RotateAfter: rotation.DefaultPolicy.DueAt})
	srv := New(Deps{Authority: auth, Queries: st, Clock: clock,
		Scheduler: rotation.NewScheduler(st, auth, nil, rotation.DefaultPolicy, clock, nil)})
	_, renewBy, _ := root.SubordinateInfo(clock.Now())
	if renewBy.IsZero() {
		t.Fatal("no renew_by for the subordinate")
	}
	want := fmt.Sprintf(`
# HELP ipsecca_ca_expiry_timestamp_seconds NotAfter of the CA's certificates, as a Unix time: ca="root" for the self-signed root (the organisation's, above a subordinate CA), ca="issuing" for a subordinate CA that signs node certificates.
# TYPE ipsecca_ca_expiry_timestamp_seconds gauge
ipsecca_ca_expiry_timestamp_seconds{ca="issuing"} %d
ipsecca_ca_expiry_timestamp_seconds{ca="root"} %d
# HELP ipsecca_rotation_next_due_timestamp_seconds Earliest rotation due time of a node's current certificate, as a Unix time (in the past: due and not yet rotated). When no node holds a certificate, the CA's own: a subordinate's renew_by, or when a self-signed root renews itself.
# TYPE ipsecca_rotation_next_due_timestamp_seconds gauge
ipsecca_rotation_next_due_timestamp_seconds %d
`, t0.AddDate(7, 0, 0).Unix(), t0.AddDate(20, 0, 0).Unix(), renewBy.Unix())
	if err := testutil.GatherAndCompare(srv.MetricsRegistry(), strings.NewReader(want),
		"ipsecca_ca_expiry_timestamp_seconds", "ipsecca_rotation_next_due_timestamp_seconds"); err != nil {
		t.Error(err)
	}
}
