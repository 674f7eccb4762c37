package daemon

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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/testclock"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/ipsecca/ipsecca/ca"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// fakeClock is the tests' shared clock.
type fakeClock = testclock.Clock

// testCA is an Instance serving over an in-memory listener.
type testCA struct {
	dir   string
	in    *Instance
	lis   *bufconn.Listener
	clock *fakeClock
}

func startCA(t *testing.T) *testCA { t.Helper(); return startCAWith(t, nil) }

// startCAWith starts a CA whose Options set may change first.
func startCAWith(t *testing.T, set func(*Options)) *testCA {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	clock := testclock.New(time.Now().Truncate(time.Second))
	opts := Options{DataDir: dir, Store: st, Clock: clock, Rand: rand.Reader}
	if set != nil {
		set(&opts)
	}
	in, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Serve(ctx, lis); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return &testCA{dir: dir, in: in, lis: lis, clock: clock}
}

// conn dials the in-memory server trusting ca.pem, presenting cert if given.
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

func (c *testCA) admin(t *testing.T) *tls.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(c.dir, AdminCertFile), filepath.Join(c.dir, AdminKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return &pair
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

func TestServiceCertsReusedAndRenewed(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	clock := testclock.New(time.Now().Truncate(time.Second))
	open := func() (*Instance, func()) {
		st, err := bolt.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		in, err := Open(context.Background(), Options{DataDir: dir, Store: st, Clock: clock, Rand: rand.Reader})
		if err != nil {
			t.Fatal(err)
		}
		return in, func() { st.Close() }
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	_, closeFn := open()
	admin1, server1, ca1 := read(AdminCertFile), read(filepath.Join(ServerCertDir, serverCert)), read(CAFile)
	closeFn()
	_, closeFn = open()
	if read(AdminCertFile) != admin1 || read(filepath.Join(ServerCertDir, serverCert)) != server1 ||
		read(CAFile) != ca1 {
		t.Fatal("restart replaced current certificates")
	}
	closeFn()
	clock.Add(250 * 24 * time.Hour) // past two thirds of a year
	_, closeFn = open()
	defer closeFn()
	if read(AdminCertFile) == admin1 || read(filepath.Join(ServerCertDir, serverCert)) == server1 {
		t.Fatal("service certificates not renewed after two thirds of their life")
	}
	if read(CAFile) != ca1 {
		t.Fatal("root changed")
	}
	for _, f := range []string{AdminKeyFile, filepath.Join(ServerCertDir, serverKey)} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v (%v), want 0600", f, fi.Mode(), err)
		}
	}
}

func TestWatchTellsTheNode(t *testing.T) {
	c := startCA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodeA := c.enrollNode(t, "node-a")
	stream, err := ipseccav1.NewNodeServiceClient(c.conn(t, nodeA)).Watch(ctx, &ipseccav1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	serial := ca.SerialString(nodeA.Leaf.SerialNumber)
	if snap.GetKind() != ipseccav1.NodeEvent_SNAPSHOT || snap.GetCurrentSerial() != serial || snap.GetRotationDue() ||
		len(snap.GetCaBundlePem()) == 0 {
		t.Fatalf("snapshot %+v", snap)
	}
	admin := ipseccav1.NewAdminServiceClient(c.conn(t, c.admin(t)))
	if _, err := admin.Rotate(ctx, &ipseccav1.RotateRequest{Node: "node-a"}); err != nil {
		t.Fatal(err)
	}
	go c.in.Scheduler.Run(ctx)
	ev, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetKind() != ipseccav1.NodeEvent_ROTATION_DUE || ev.GetCurrentSerial() != serial ||
		ev.GetReason() != "forced" {
		t.Fatalf("rotation event %+v", ev)
	}
	if _, err := admin.RenewCA(ctx, &ipseccav1.RenewCARequest{}); err != nil {
		t.Fatal(err)
	}
	ev, err = stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetKind() != ipseccav1.NodeEvent_CA_BUNDLE_CHANGED || ev.GetCaBundleSha256() == snap.GetCaBundleSha256() {
		t.Fatalf("CA event %+v", ev)
	}
	onDisk, _ := os.ReadFile(filepath.Join(c.dir, CAFile))
	if string(onDisk) != string(ev.GetCaBundlePem()) {
		t.Fatal("ca.pem in the data directory is not the new bundle")
	}
	// A new connection's snapshot says the node is due.
	stream2, err := ipseccav1.NewNodeServiceClient(c.conn(t, nodeA)).Watch(ctx, &ipseccav1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if snap2, err := stream2.Recv(); err != nil || !snap2.GetRotationDue() {
		t.Fatalf("snapshot after forced rotation: %+v %v", snap2, err)
	}
	// Inventory reported by the node shows in ListNodes.
	node := ipseccav1.NewNodeServiceClient(c.conn(t, nodeA))
	if _, err := node.ReportInventory(ctx,
		&ipseccav1.ReportInventoryRequest{Entries: []*ipseccav1.InventoryEntry{{Nickname: "ovs_certkey_node-a",
			Serial: serial, Trust: "u,u,u"}}}); err != nil {
		t.Fatal(err)
	}
	nodes, err := admin.ListNodes(ctx, &ipseccav1.ListNodesRequest{Node: "node-a"})
	if err != nil || len(nodes.GetNodes()) != 1 || len(nodes.GetNodes()[0].GetInventory()) != 1 ||
		nodes.GetNodes()[0].GetCurrent().GetSerial() != serial {
		t.Fatalf("nodes: %+v %v", nodes, err)
	}
}

func TestRefusesReadableKeyMaterial(t *testing.T) {
	for _, f := range []string{"", AdminKeyFile, filepath.Join(ServerCertDir, serverKey), "ipsecca.db"} {
		c := startCA(t)
		p := filepath.Join(c.dir, f)
		mode := os.FileMode(0o644)
		if f == "" {
			mode = 0o755
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		err := CheckPermissions(c.dir)
		if err == nil || !strings.Contains(err.Error(), "chmod") {
			t.Errorf("%s at %v: %v", p, mode, err)
		}
	}
	if err := CheckPermissions(startCA(t).dir); err != nil {
		t.Fatalf("fresh data directory refused: %v", err)
	}
	// An empty directory made 0755 by an operator is tightened, not refused.
	empty := t.TempDir()
	os.Chmod(empty, 0o755)
	if err := CheckPermissions(empty); err != nil {
		t.Fatalf("empty 0755 directory: %v", err)
	}
	if fi, _ := os.Stat(empty); fi.Mode().Perm() != 0o700 {
		t.Fatalf("empty directory left at %v", fi.Mode())
	}
}

// TestStopEndsWatchStreams: stopping the CA ends the nodes' Watch streams
// (Unavailable, so sidecars reconnect to the next server) instead of
// waiting out the graceful stop's timeout on streams that never end.
func TestStopEndsWatchStreams(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	in, err := Open(context.Background(), Options{DataDir: dir, Store: st, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	c := &testCA{dir: dir, in: in, lis: bufconn.Listen(1 << 20)}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { in.Serve(ctx, c.lis); close(served) }()
	node := c.enrollNode(t, "node-a")
	stream, err := ipseccav1.NewNodeServiceClient(c.conn(t, node)).Watch(context.Background(),
		&ipseccav1.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first Watch message: %v", err)
	}
	start := time.Now()
	cancel()
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Watch after the stop: %v, want Unavailable", err)
	}
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	// The graceful stop gives up on open streams after 5 s.
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the stop took %s: it waited on the Watch stream", took)
	}
}
