package integration

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// refusal is what every ipsecca client says when a server is not the CA.
const refusal = "the server's certificate is not an ipsecca server certificate"

// impostor is a gRPC server presenting a node's certificate and key. It
// answers every method with an error, recording what reached it.
type impostor struct {
	Addr string
	mu   sync.Mutex
	seen []string // methods called, and any bootstrap token received
}

func startImpostor(t *testing.T, pair tls.Certificate) *impostor {
	t.Helper()
	imp := &impostor{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&pair)),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			method, _ := grpc.MethodFromServerStream(stream)
			imp.mu.Lock()
			defer imp.mu.Unlock()
			imp.seen = append(imp.seen, method)
			if strings.HasSuffix(method, "/Enroll") {
				var req ipseccav1.EnrollRequest
				if stream.RecvMsg(&req) == nil {
					imp.seen = append(imp.seen, "token "+req.GetToken())
				}
			}
			return status.Error(codes.Internal, "impostor")
		}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	_, port, _ := net.SplitHostPort(l.Addr().String())
	imp.Addr = "localhost:" + port
	return imp
}

func (imp *impostor) Seen() []string {
	imp.mu.Lock()
	defer imp.mu.Unlock()
	return append([]string(nil), imp.seen...)
}

// TestClientsRefuseNodePosingAsServer: a node enrolled as "localhost", a
// name in the CA server's own certificate, holds a certificate from the
// same CA, valid for that name and for serverAuth. Serving gRPC with it,
// it must not pass for the CA with the enroll, renew and admin commands or
// the sidecar: each refuses at the TLS handshake, before any request (a
// bootstrap token, an admin call) leaves it, while the same commands work
// against the real server under the same name.
func TestClientsRefuseNodePosingAsServer(t *testing.T) {
	srv := startServer(t, "")
	_, port, _ := net.SplitHostPort(srv.Addr)
	real := "localhost:" + port

	thief := newNode(t, srv, "localhost")
	if r := run(t, nil, sidecarArgs(thief, real)...); r.Code != 0 {
		t.Fatalf("enrolling node localhost: %+v", r)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(thief.state, "node.pem"), filepath.Join(thief.state, "node-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	// The premise: chain, name and EKU checks alone accept the node as "localhost".
	caPEM, _ := os.ReadFile(srv.CAFile())
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf(
			"the node certificate does not verify as a TLS server for localhost, so this test proves nothing: %v",
			err,
		)
	}
	imp := startImpostor(t, pair)

	dir := t.TempDir()
	tokenFor := func(node string) string {
		f := filepath.Join(dir, node+".token")
		if err := os.WriteFile(f, []byte(mustRun(t, srv.Env(), "token", "create", "--node", node)), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	_, enrollCSR := opensslCSR(t, dir, "node-b", "/CN=node-b", "-addext", "subjectAltName=DNS:node-b")
	_, renewCSR := opensslCSR(t, dir, "localhost-new", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost")
	enrollToken := tokenFor("node-b")
	sidecarNode := newNode(t, srv, "node-d")
	admin := func(addr string) []string {
		return []string{"IPSECCA_SERVER=" + addr, "IPSECCA_DATA_DIR=" + srv.DataDir}
	}

	for _, tc := range []struct {
		name string
		env  func(addr string) []string
		args func(addr string) []string
	}{
		{"enroll", nil, func(addr string) []string {
			return []string{"enroll", "--server", addr, "--ca-file", srv.CAFile(), "--token-file", enrollToken, "--csr",
				enrollCSR,
				"--out", filepath.Join(dir, "node-b.pem")}
		}},
		{"renew", nil, func(addr string) []string {
			return []string{"renew", "--server", addr, "--ca-file", srv.CAFile(), "--cert", filepath.Join(thief.state,
				"node.pem"),
				"--key", filepath.Join(thief.state, "node-key.pem"), "--csr", renewCSR, "--out", filepath.Join(dir,
					"renewed.pem")}
		}},
		{"token create", admin, func(string) []string { return []string{"token", "create", "--node", "node-c"} }},
		{"certs list", admin, func(string) []string { return []string{"certs", "list"} }},
		{"status", admin, func(string) []string { return []string{"status"} }},
		{"sidecar", nil, func(addr string) []string { return sidecarArgs(sidecarNode, addr) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := func(addr string) []string {
				if tc.env == nil {
					return nil
				}
				return tc.env(addr)
			}
			before := len(imp.Seen())
			r := run(t, env(imp.Addr), tc.args(imp.Addr)...)
			if r.Code == 0 || !strings.Contains(r.Stderr, refusal) || !strings.Contains(r.Stderr, "CN=localhost") {
				t.Errorf(
					"against the node posing as the server: exit %d, want a refusal naming the certificate\nstdout: %s\nstderr: %s",
					r.Code,
					r.Stdout,
					r.Stderr,
				)
			} else {
				t.Logf("refused: %s", strings.TrimSpace(r.Stderr[strings.LastIndex(strings.TrimSpace(r.Stderr),
					"\n")+1:]))
			}
			if seen := imp.Seen()[before:]; len(seen) > 0 {
				t.Errorf("the node posing as the server received %v", seen)
			}
			if r := run(t, env(real), tc.args(real)...); r.Code != 0 {
				t.Errorf(
					"against the real server at %s: exit %d\nstdout: %s\nstderr: %s",
					real,
					r.Code,
					r.Stdout,
					r.Stderr,
				)
			}
		})
	}
	// An enrolled sidecar pointed at the impostor keeps its certificate
	// and database, and takes nothing from it (no CA bundle, no CRL) nor
	// reports its inventory to it.
	before, seen := dbFiles(t, sidecarNode.nss), len(imp.Seen())
	r := run(t, nil, sidecarArgs(sidecarNode, imp.Addr)...)
	if r.Code != 0 || !strings.Contains(r.Stderr, refusal) {
		t.Errorf(
			"enrolled sidecar against the impostor: exit %d, want 0 (current pair kept) and the refusal logged\nstderr: %s",
			r.Code,
			r.Stderr,
		)
	}
	if got := imp.Seen()[seen:]; len(got) > 0 {
		t.Errorf("the node posing as the server received %v from an enrolled sidecar", got)
	}
	if !bytes.Equal(before, dbFiles(t, sidecarNode.nss)) {
		t.Error("a pass against the impostor changed the NSS database")
	}
}

// sidecarArgs is `sidecar --once` for n against addr.
func sidecarArgs(n *node, addr string) []string {
	return []string{"sidecar", "--once", "--server", addr, "--ca-file", n.srv.CAFile(), "--node", n.name,
		"--token-file", n.tokenFile, "--nss-dir", n.nss, "--state-dir", n.state}
}
