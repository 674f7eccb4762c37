package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/testclock"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/rotation"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// fakeClock is the tests' shared clock.
type fakeClock = testclock.Clock

// testInstance is the front door and the domain behind it, as the tests
// reach them.
type testInstance struct {
	Authority *ca.Authority
	Scheduler *rotation.Scheduler
	Server    *Server
}

// testCA is a Server over a real bbolt store and a real ca.Authority,
// serving over an in-memory listener with a service certificate and an
// admin credential the Authority issued (the daemon package assembles the
// same from a data directory; here nothing is read from or written to one).
type testCA struct {
	dir       string
	in        *testInstance
	lis       *bufconn.Listener
	clock     *fakeClock
	adminPair *tls.Certificate
}

func startCA(t *testing.T) *testCA { t.Helper(); return startCAWith(t, nil) }

// startCAWith starts a CA whose Deps set may change first.
func startCAWith(t *testing.T, set func(*Deps)) *testCA {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	clock := testclock.New(time.Now().Truncate(time.Second))
	root, _, err := ca.Bootstrap(ctx, st, ca.RootConfig{}, clock)
	if err != nil {
		t.Fatal(err)
	}
	policy := rotation.DefaultPolicy
	auth := ca.New(st, root, ca.Config{Clock: clock, Rand: rand.Reader, RotateAfter: policy.DueAt})
	hub := NewHub()
	sched := rotation.NewScheduler(st, auth, hub, policy, clock, nil)
	deps := Deps{Authority: auth, Queries: st, Scheduler: sched, Hub: hub, Clock: clock}
	if set != nil {
		set(&deps)
	}
	srv := New(deps)
	serverPair := issuePair(t, auth, store.KindServer, "ipsecca-server", []string{"localhost"}, nil)
	adminPair := issuePair(t, auth, store.KindAdmin, "ipsecca-admin", nil, nil)
	g, hs := srv.GRPCServer(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return serverPair, nil })
	lis := bufconn.Listen(1 << 20)
	done := make(chan struct{})
	go func() { g.Serve(lis); close(done) }()
	t.Cleanup(func() { hs.Shutdown(); g.Stop(); <-done; st.Close() })
	return &testCA{
		dir:       dir,
		in:        &testInstance{Authority: auth, Scheduler: sched, Server: srv},
		lis:       lis,
		clock:     clock,
		adminPair: adminPair,
	}
}

// issuePair has the Authority issue a service certificate (server or
// admin) for a new key.
func issuePair(
	t *testing.T,
	auth *ca.Authority,
	kind store.Kind,
	name string,
	dns []string,
	ips []net.IP,
) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := auth.IssueService(context.Background(), kind, name, key.Public(), dns, ips, 1, "test")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{rec.DER}, PrivateKey: key, Leaf: leaf}
}

// conn dials the in-memory server trusting the CA bundle, presenting cert
// if given.
func (c *testCA) conn(t *testing.T, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.in.Authority.Root().BundlePEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return c.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// admin is the admin credential issued at start.
func (c *testCA) admin(t *testing.T) *tls.Certificate {
	t.Helper()
	return c.adminPair
}

// rotateAdmin rotates the admin credential old (RotateAdmin) and returns
// the new one; old then authenticates no more.
func (c *testCA) rotateAdmin(t *testing.T, old *tls.Certificate) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	resp, err := ipseccav1.NewAdminServiceClient(c.conn(t, old)).
		RotateAdmin(context.Background(), &ipseccav1.RotateAdminRequest{CsrPem: csrFor(t, key, "admin")})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(resp.GetCertificate().GetCertificatePem())
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}
}

func csrFor(t *testing.T, key crypto.Signer, cn string) []byte {
	der, err := x509.CreateCertificateRequest(
		rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}},
		key,
	)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// enrollNode enrols node and returns its TLS key pair.
func (c *testCA) enrollNode(t *testing.T, node string) *tls.Certificate {
	t.Helper()
	ctx := context.Background()
	tok, err := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t))).
		CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	resp, err := ipseccav1.NewNodeServiceClient(c.conn(t, nil)).
		Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, key, node)})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(resp.GetCertificate().GetCertificatePem())
	leaf, _ := x509.ParseCertificate(block.Bytes)
	return &tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key, Leaf: leaf}
}

// TestAuthorization: each RPC against each kind of caller.
func TestAuthorization(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	nodeA := c.enrollNode(t, "node-a")
	other := startCA(t).enrollNode(t, "node-a") // same name, another CA

	callers := map[string]*tls.Certificate{"anonymous": nil, "admin": c.admin(t), "node-a": nodeA, "other-ca": other}
	calls := map[string]func(conn *grpc.ClientConn) error{
		// Renew is in TestAuthorizationMatrix, which orders it last (it
		// supersedes the certificate the other calls use).
		"GetCABundle": func(conn *grpc.ClientConn) error {
			_, err := ipseccav1.NewNodeServiceClient(conn).GetCABundle(ctx, &ipseccav1.GetCABundleRequest{})
			return err
		},
		"CreateToken": func(conn *grpc.ClientConn) error {
			_, err := ipseccav1.NewAdminServiceClient(conn).
				CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-z"})
			return err
		},
		"ListCertificates": func(conn *grpc.ClientConn) error {
			_, err := ipseccav1.NewAdminServiceClient(conn).ListCertificates(ctx, &ipseccav1.ListCertificatesRequest{})
			return err
		},
		"ListEvents": func(conn *grpc.ClientConn) error {
			_, err := ipseccav1.NewAdminServiceClient(conn).ListEvents(ctx, &ipseccav1.ListEventsRequest{})
			return err
		},
		"Health": func(conn *grpc.ClientConn) error {
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				return status.Error(codes.Unknown, resp.GetStatus().String())
			}
			return err
		},
	}
	U, P, OK := codes.Unauthenticated, codes.PermissionDenied, codes.OK
	want := map[string]map[string]codes.Code{
		"GetCABundle":      {"anonymous": OK, "admin": OK, "node-a": OK, "other-ca": OK},
		"CreateToken":      {"anonymous": U, "admin": OK, "node-a": P, "other-ca": U},
		"ListCertificates": {"anonymous": U, "admin": OK, "node-a": P, "other-ca": U},
		"ListEvents":       {"anonymous": U, "admin": OK, "node-a": P, "other-ca": U},
		"Health":           {"anonymous": OK, "admin": OK, "node-a": OK, "other-ca": OK},
	}
	for method, byCaller := range want {
		for caller, code := range byCaller {
			if got := status.Code(calls[method](c.conn(t, callers[caller]))); got != code {
				t.Errorf("%s as %s: %s, want %s", method, caller, got, code)
			}
		}
	}
}

func TestExpiredClientCertIsUnauthenticated(t *testing.T) {
	c := startCA(t)
	nodeA := c.enrollNode(t, "node-a")
	// A call first, so the verified chain is cached: expiry must still win.
	if _, err := ipseccav1.NewNodeServiceClient(c.conn(t, nodeA)).ReportInventory(context.Background(),
		&ipseccav1.ReportInventoryRequest{}); err != nil {
		t.Fatal(err)
	}
	c.clock.Add(5*365*24*time.Hour + 72*time.Hour)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err := ipseccav1.NewNodeServiceClient(c.conn(t, nodeA)).
		Renew(context.Background(), &ipseccav1.RenewRequest{CsrPem: csrFor(t, key, "node-a")})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("renew with an expired cert: %v", err)
	}
}

func TestDenialsCarryReason(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	node := ipseccav1.NewNodeServiceClient(c.conn(t, nil))
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok, err := admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		req    *ipseccav1.EnrollRequest
		code   codes.Code
		reason ca.Reason
	}{
		{"no csr", &ipseccav1.EnrollRequest{Token: tok.GetToken()}, codes.InvalidArgument, ""},
		{
			"garbage token",
			&ipseccav1.EnrollRequest{Token: "x", CsrPem: csrFor(t, key, "node-a")},
			codes.Unauthenticated,
			ca.ReasonTokenInvalid,
		},
		{
			"other node",
			&ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, key, "node-b")},
			codes.PermissionDenied,
			ca.ReasonCNNotCallersNode,
		},
		{
			"ovs_",
			&ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, key, "ovs_a")},
			codes.InvalidArgument,
			ca.ReasonCNForbiddenOVS,
		},
		{
			"malformed",
			&ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: []byte("nope")},
			codes.InvalidArgument,
			ca.ReasonCSRMalformed,
		},
	}
	for _, tc := range cases {
		_, err := node.Enroll(ctx, tc.req)
		if status.Code(err) != tc.code || ReasonOf(err) != string(tc.reason) {
			t.Errorf("%s: %v (reason %q), want %s %q", tc.name, err, ReasonOf(err), tc.code, tc.reason)
		}
	}
	// Too big for the transport: ResourceExhausted, and the server lives on.
	_, err = node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: make([]byte, 2*MaxRecvMsgSize)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized request: %v", err)
	}
	if _, err := node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok.GetToken(), CsrPem: csrFor(t, key,
		"node-a")}); err != nil {
		t.Fatalf("valid enrolment after the bad ones: %v", err)
	}
	// Admin listing arguments.
	if _, err := admin.ListCertificates(ctx, &ipseccav1.ListCertificatesRequest{PageSize: 5000}); status.Code(
		err,
	) != codes.InvalidArgument {
		t.Errorf("page size 5000: %v", err)
	}
	if _, err := admin.ListCertificates(ctx, &ipseccav1.ListCertificatesRequest{State: "bogus"}); status.Code(
		err,
	) != codes.InvalidArgument {
		t.Errorf("bad state: %v", err)
	}
	if _, err := admin.GetCertificate(ctx, &ipseccav1.GetCertificateRequest{Serial: "abc123"}); status.Code(
		err,
	) != codes.NotFound {
		t.Errorf("unknown serial: %v", err)
	}
}

// TestEveryMethodHasAnAccessRule keeps the authorization table complete.
func TestEveryMethodHasAnAccessRule(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{ipseccav1.NodeService_ServiceDesc, ipseccav1.AdminService_ServiceDesc} {
		for _, m := range sd.Methods {
			if _, ok := methodAccess["/"+sd.ServiceName+"/"+m.MethodName]; !ok {
				t.Errorf("%s/%s has no access rule", sd.ServiceName, m.MethodName)
			}
		}
		for _, m := range sd.Streams {
			if _, ok := methodAccess["/"+sd.ServiceName+"/"+m.StreamName]; !ok {
				t.Errorf("%s/%s has no access rule", sd.ServiceName, m.StreamName)
			}
		}
	}
}

func TestRevokeNode(t *testing.T) {
	c := startCA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodeA := c.enrollNode(t, "node-a")
	stream, err := ipseccav1.NewNodeServiceClient(c.conn(t, nodeA)).Watch(ctx, &ipseccav1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	resp, err := admin.RevokeNode(ctx, &ipseccav1.RevokeNodeRequest{Node: "node-a", Reason: "decommissioned"})
	if err != nil || resp.GetRevoked() != 1 {
		t.Fatalf("revoke: %v %v", resp, err)
	}
	if ev, err := stream.Recv(); err != nil || ev.GetKind() != ipseccav1.NodeEvent_REVOKED {
		t.Fatalf("watch after revoke: %v %v", ev, err)
	}
	// The revoked certificate no longer authenticates.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, err = ipseccav1.NewNodeServiceClient(c.conn(t, nodeA)).
		Renew(ctx, &ipseccav1.RenewRequest{CsrPem: csrFor(t, key, "node-a")})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("renew with a revoked cert: %v", err)
	}
	// The CRL (anonymous) lists it, signed by the root.
	crl, err := ipseccav1.NewNodeServiceClient(c.conn(t, nil)).GetCRL(ctx, &ipseccav1.GetCRLRequest{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := x509.ParseRevocationList(crl.GetDer())
	if err != nil {
		t.Fatal(err)
	}
	if err := list.CheckSignatureFrom(c.in.Authority.Root().Cert); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if len(list.RevokedCertificateEntries) != 1 ||
		list.RevokedCertificateEntries[0].SerialNumber.Cmp(nodeA.Leaf.SerialNumber) != 0 {
		t.Fatalf("CRL entries %+v", list.RevokedCertificateEntries)
	}
	// Revoking again is idempotent: done already, nothing revoked.
	if again, err := admin.RevokeNode(ctx, &ipseccav1.RevokeNodeRequest{Node: "node-a"}); err != nil ||
		!again.GetAlreadyRevoked() || again.GetRevoked() != 0 {
		t.Fatalf("second revoke: %v %v; want OK, already revoked", again, err)
	}
	// A node nothing is known of is NotFound, and is not revoked in advance.
	if _, err := admin.RevokeNode(ctx, &ipseccav1.RevokeNodeRequest{Node: "nobody"}); status.Code(
		err,
	) != codes.NotFound {
		t.Fatalf("revoke an unknown node: %v", err)
	}
	// No token for a revoked node until an admin re-admits it; then a new
	// token works.
	if _, err := admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-a"}); status.Code(
		err,
	) != codes.FailedPrecondition ||
		ReasonOf(err) != "node-revoked" {
		t.Fatalf("token for a revoked node: %v", err)
	}
	if _, err := admin.ReadmitNode(ctx, &ipseccav1.ReadmitNodeRequest{Node: "node-a"}); err != nil {
		t.Fatal(err)
	}
	c.enrollNode(t, "node-a")
}

func TestRateLimits(t *testing.T) {
	l := newLimiter(Limits{Global: 1000, PerNode: 1, PerNodeBurst: 3})
	for i := range 3 {
		if err := l.allow("token a"); err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	err := l.allow("token a")
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("4th attempt: %v", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 || retry.GetRetryDelay().AsDuration() > time.Second {
		t.Fatalf("retry advice %v", retry)
	}
	if err := l.allow("token b"); err != nil {
		t.Fatalf("another node is limited too: %v", err)
	}
	g := newLimiter(Limits{Global: 5, PerNode: 1000, PerNodeBurst: 1000})
	n := 0
	for range 100 {
		if g.allow("k") == nil {
			n++
		}
	}
	if n > 11 {
		t.Fatalf("global limit 5/s (burst 11) admitted %d at once", n)
	}
}

func TestModeGatesNodeCertificates(t *testing.T) {
	for _, mode := range []Mode{ModeDisabled, ModeExternal} {
		c := startCA(t)
		c.in.Server.mode = mode
		ctx := context.Background()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, err := ipseccav1.NewNodeServiceClient(c.conn(t, nil)).
			Enroll(ctx, &ipseccav1.EnrollRequest{Token: "x", CsrPem: csrFor(t, key, "node-a")})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), string(mode)) {
			t.Errorf("%s: enroll %v", mode, err)
		}
		admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
		if _, err := admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-a"}); status.Code(
			err,
		) != codes.FailedPrecondition {
			t.Errorf("%s: token create %v", mode, err)
		}
		if _, err := admin.GetCA(ctx, &ipseccav1.GetCARequest{}); err != nil {
			t.Errorf("%s: admin queries still served: %v", mode, err)
		}
	}
}

func TestValidateBundleIsAuditedWithoutSecrets(t *testing.T) {
	c := startCA(t)
	ctx := context.Background()
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	// A bundle that does not decode with the password given: the finding
	// comes back and the audit record holds neither the password nor the p12.
	resp, err := admin.ValidateBundle(
		ctx,
		&ipseccav1.ValidateBundleRequest{P12: []byte("not-a-p12-secret-bytes"), Password: "hunter2-secret",
			CaPem: c.in.Authority.Root().CertPEM, Left: "node1.example.com", Right: "ext.example.com"},
	)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOk() || resp.GetErrors() == 0 || resp.GetFindings()[0].GetCode() == "" {
		t.Fatalf("response %+v", resp)
	}
	events, err := admin.ListEvents(ctx, &ipseccav1.ListEventsRequest{Type: "bundle.validated"})
	if err != nil || len(events.GetEvents()) != 1 {
		t.Fatalf("audit: %v %v", events, err)
	}
	rec := events.GetEvents()[0].String()
	if strings.Contains(rec, "hunter2") || strings.Contains(rec, "secret-bytes") ||
		!strings.Contains(rec, "ext.example.com") {
		t.Fatalf("audit record %s", rec)
	}
	// Node certificates cannot call it.
	node := c.enrollNode(t, "node-a")
	if _, err := ipseccav1.NewAdminServiceClient(c.conn(t, node)).ValidateBundle(ctx,
		&ipseccav1.ValidateBundleRequest{}); status.Code(
		err,
	) != codes.PermissionDenied {
		t.Fatalf("node calling ValidateBundle: %v", err)
	}
}
