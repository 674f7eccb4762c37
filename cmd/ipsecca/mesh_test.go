package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/daemon"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// meshCA is a CA serving on a loopback port, its data directory holding
// the admin credentials the CLI reads.
type meshCA struct {
	dir, addr string
	in        *daemon.Instance
}

func startMeshCA(t *testing.T) *meshCA {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	in, err := daemon.Open(context.Background(), daemon.Options{DataDir: dir, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Serve(ctx, lis); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return &meshCA{dir: dir, addr: lis.Addr().String(), in: in}
}

// issue issues node a certificate for a new key.
func (c *meshCA) issue(t *testing.T, node string) *store.Cert {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: node}}, key)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := c.in.Authority.IssueForNode(context.Background(), ca.NodeRequest{
		CSRPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		Identity: ca.Identity{Node: node, CN: node}, Via: "kube", Actor: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// report has node report one established tunnel to peer, presenting cert
// (pluto 4.10 lists no peer key: the pair is told by what each presents).
func (c *meshCA) report(t *testing.T, node, peer string, cert *store.Cert) {
	t.Helper()
	_, err := c.in.Authority.ReportInventory(context.Background(), node, store.Report{TunnelsReported: true,
		Tunnels: []store.TunnelRecord{{Peer: peer, Established: true, IKEState: 1, ChildSAs: 2,
			AuthenticatedAt: time.Now(), LocalSerial: cert.Serial}}})
	if err != nil {
		t.Fatal(err)
	}
}

// cli runs ipsecca with the connection flags to c and returns the exit
// status, stdout and stderr.
func (c *meshCA) cli(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	args = append(args, "--data-dir", c.dir, "--server", c.addr)
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func meshJSON(t *testing.T, out string) *ipseccav1.MeshStatusResponse {
	t.Helper()
	resp := new(ipseccav1.MeshStatusResponse)
	if err := protojson.Unmarshal([]byte(out), resp); err != nil {
		t.Fatalf("not the API's JSON: %v\n%s", err, out)
	}
	return resp
}

func TestMeshStatusCLI(t *testing.T) {
	defer func(d time.Duration) { meshPoll = d }(meshPoll)
	meshPoll = 50 * time.Millisecond
	c := startMeshCA(t)
	a, b := c.issue(t, "node-a"), c.issue(t, "node-b")
	c.report(t, "node-a", "node-b", a)
	c.report(t, "node-b", "node-a", b)

	code, out, errOut := c.cli("mesh", "status", "--json")
	if code != 0 {
		t.Fatalf("mesh status --json: exit %d: %s", code, errOut)
	}
	resp := meshJSON(t, out)
	root := ca.SerialString(c.in.Authority.Root().Cert.SerialNumber)
	if !resp.GetConverged() || resp.GetNodesReporting() != 2 || resp.GetCurrentRootSerial() != root ||
		len(resp.GetPairs()) != 2 {
		t.Fatalf("mesh status --json: %v", resp)
	}
	for i, want := range [][3]string{{"node-a", "node-b", b.Serial}, {"node-b", "node-a", a.Serial}} {
		p := resp.GetPairs()[i]
		if p.GetNode() != want[0] || p.GetPeer() != want[1] || p.GetPeerSerial() != want[2] ||
			p.GetState() != "current" || p.GetPeerRootSerial() != root || p.GetChildSas() != 2 {
			t.Errorf("pair %d: %v; want %v", i, p, want)
		}
	}

	code, out, _ = c.cli("mesh", "status")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 ||
		strings.Join(strings.Fields(lines[0]), " ") != "NODE PEER STATE PEER-SERIAL ROOT AUTHENTICATED CHILD-SAS" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "node-a node-b current "+b.Serial+" "+root) ||
		lines[3] != "2 pairs, 2 current; converged" {
		t.Errorf("mesh status: exit %d\n%s", code, out)
	}
	if code, out, errOut = c.cli("mesh", "status", "--wait", "5s"); code != 0 ||
		!strings.Contains(out, "; converged") || !strings.Contains(errOut, "mesh: 2/2 pairs done") {
		t.Errorf("mesh status --wait on a converged mesh: exit %d\n%s%s", code, out, errOut)
	}

	// node-b renews; node-b's tunnel still presents the old certificate.
	c.issue(t, "node-b")
	start := time.Now()
	code, out, errOut = c.cli("mesh", "status", "--wait", "300ms", "--json")
	if code != 1 || time.Since(start) < 300*time.Millisecond || meshJSON(t, out).GetConverged() ||
		!strings.Contains(errOut, "mesh: 1/2 pairs done; pending: 1 superseded") ||
		!strings.Contains(errOut, "not converged after 300ms: 1 of 2 pairs pending:\n  node-a -> node-b: superseded") {
		t.Errorf("mesh status --wait on a mesh that does not converge: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = c.cli("mesh", "status")
	if code != 0 || !strings.HasSuffix(out, "2 pairs, 1 current; not converged\n") {
		t.Errorf("mesh status after the renewal: exit %d\n%s", code, out)
	}
}
