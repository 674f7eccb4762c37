package grpcaddr

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // joined, or the error's substring
		ok   bool
	}{
		{"h1:8443", "h1:8443", true},
		{" h1:8443 , h2:8443,", "h1:8443 h2:8443", true},
		{"[::1]:8443,127.0.0.1:1", "[::1]:8443 127.0.0.1:1", true},
		{"h1", "want host:port", false},
		{"h1:8443,h2", `"h2"`, false},
		{",", "no server address", false},
	} {
		got, err := Split(tc.in)
		if tc.ok && (err != nil || strings.Join(got, " ") != tc.want) {
			t.Errorf("Split(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Split(%q) error %v, want one containing %s", tc.in, err, tc.want)
		}
	}
}

// testPKI is a root and leaves issued like ipsecca's profile (serverAuth and
// clientAuth for every kind); only the subject tells a server from a node.
type testPKI struct {
	key  *ecdsa.PrivateKey
	root *x509.Certificate
	pool *x509.CertPool
	n    int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"ipsecca"},
		CommonName: "ipsecca root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &testPKI{key: key, root: root, pool: pool, n: 1}
}

// leaf issues a certificate for 127.0.0.1 and localhost with subject O=ipsecca, OU=ou (none when
// empty), CN=cn.
func (p *testPKI) leaf(t *testing.T, ou, cn string) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.n++
	subj := pkix.Name{Organization: []string{"ipsecca"}, CommonName: cn}
	if ou != "" {
		subj.OrganizationalUnit = []string{ou}
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.n), Subject: subj, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0,
			1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth,
			x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.root, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// serve runs a gRPC health server presenting cert on a loopback port.
func serve(t *testing.T, cert *tls.Certificate) string {
	t.Helper()
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(cert)))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func check(addr string, cfg *tls.Config) error {
	conn, err := Dial(addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// A client given a dead replica first and a live one second reaches the
// live one, verifying it under its own address.
func TestDialFailsOver(t *testing.T) {
	p := newTestPKI(t)
	live := serve(t, p.leaf(t, ServerOU, "ipsecca-server"))
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()

	conn, err := Dial(deadAddr+","+live, &tls.Config{RootCAs: p.pool, ServerName: "ignored.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 5 { // round-robin: every call must land on the live one
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d with the first replica down: %v", i, err)
		}
	}
}

const refusal = "is not an ipsecca server certificate"

// TestVerifyServerKind: only a leaf with OU exactly "ipsecca server" passes; a node's, an admin's,
// a look-alike OU and no certificate at all are refused with the reason.
func TestVerifyServerKind(t *testing.T) {
	p := newTestPKI(t)
	for _, tc := range []struct {
		name, ou string
		ok       bool
	}{
		{"server", ServerOU, true},
		{"node", "", false},
		{"admin", "ipsecca admin", false},
		{"look-alike", "ipsecca server ", false},
		{"case", "IPsecCA Server", false},
	} {
		leaf := p.leaf(t, tc.ou, "localhost").Leaf
		err := VerifyServerKind(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
		if tc.ok != (err == nil) {
			t.Errorf("%s (OU %q): %v", tc.name, tc.ou, err)
		}
		if err != nil && (!strings.Contains(err.Error(), refusal) || !strings.Contains(err.Error(), "CN=localhost") ||
			!strings.Contains(err.Error(), "refusing to talk to it")) {
			t.Errorf("%s: error %q does not say what and why", tc.name, err)
		}
	}
	if err := VerifyServerKind(tls.ConnectionState{}); err == nil {
		t.Error("no certificate at all was accepted")
	}
}

// TestDialRefusesNodeCertificate: a node certificate from the same CA, valid for the dialled name and
// carrying serverAuth, does not pass for the CA server; the server's own does.
func TestDialRefusesNodeCertificate(t *testing.T) {
	p := newTestPKI(t)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.pool}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		_, port, _ := net.SplitHostPort(serve(t, p.leaf(t, "", "localhost")))
		err := check(net.JoinHostPort(host, port), cfg)
		if err == nil || !strings.Contains(err.Error(), refusal) {
			t.Errorf("node certificate at %s: %v, want a refusal", host, err)
		}
		_, port, _ = net.SplitHostPort(serve(t, p.leaf(t, ServerOU, "ipsecca-server")))
		if err := check(net.JoinHostPort(host, port), cfg); err != nil {
			t.Errorf("server certificate at %s: %v", host, err)
		}
	}
	// Several replicas take the same path.
	node, srv := serve(t, p.leaf(t, "", "localhost")), serve(t, p.leaf(t, ServerOU, "ipsecca-server"))
	if err := check(node+","+node, cfg); err == nil || !strings.Contains(err.Error(), refusal) {
		t.Errorf("node certificate behind a replica list: %v, want a refusal", err)
	}
	if err := check(srv+","+srv, cfg); err != nil {
		t.Errorf("server certificate behind a replica list: %v", err)
	}
}

// TestRequireServerKeepsCallerCheck: a caller's own VerifyConnection still runs, first.
func TestRequireServerKeepsCallerCheck(t *testing.T) {
	p := newTestPKI(t)
	called := false
	cfg := RequireServer(&tls.Config{VerifyConnection: func(tls.ConnectionState) error { called = true; return nil }})
	node := p.leaf(t, "", "localhost").Leaf
	err := cfg.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{node}})
	if err == nil || !called {
		t.Fatalf("called=%v err=%v", called, err)
	}
}

// flakyHealth answers UNAVAILABLE to its first fails calls, as a replica
// restarting does.
type flakyHealth struct {
	healthpb.UnimplementedHealthServer
	mu    sync.Mutex
	calls int
	fails int
}

func (f *flakyHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.fails {
		return nil, status.Error(codes.Unavailable, "restarting")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// WithRetry retries the named calls that fail UNAVAILABLE; others are not
// retried; on one address and on several.
func TestWithRetry(t *testing.T) {
	p := newTestPKI(t)
	cert := p.leaf(t, ServerOU, "ipsecca-server")
	for _, tc := range []struct {
		name     string
		opts     []Option
		replicas bool
		wantErr  bool
		calls    int
	}{
		{"retried", []Option{WithRetry("grpc.health.v1.Health", "Check")}, false, false, 3},
		{"retried, replicas", []Option{WithRetry("grpc.health.v1.Health", "List", "Check")}, true, false, 3},
		{"other method", []Option{WithRetry("grpc.health.v1.Health", "Watch")}, false, true, 1},
		{"no policy", nil, false, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &flakyHealth{fails: 2}
			srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(cert)))
			healthpb.RegisterHealthServer(srv, h)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(l)
			defer srv.Stop()
			addr := l.Addr().String()
			if tc.replicas {
				addr += "," + addr
			}
			conn, err := Dial(addr, &tls.Config{RootCAs: p.pool}, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			h.mu.Lock()
			defer h.mu.Unlock()
			if (err != nil) != tc.wantErr || h.calls != tc.calls {
				t.Errorf("err %v after %d calls; want error %v after %d", err, h.calls, tc.wantErr, tc.calls)
			}
		})
	}
}
