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

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/daemon"
	"github.com/ipsecca/ipsecca/internal/clijson"
	"github.com/ipsecca/ipsecca/internal/testclock"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// meshCA is a CA serving on a loopback port, its data directory holding
// the admin credentials the CLI reads.
type meshCA struct {
	dir, addr string
	in        *daemon.Instance
	st        *bolt.Store
	clock     *testclock.Clock
}

func startMeshCA(t *testing.T) *meshCA {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	clock := testclock.New(time.Now().Truncate(time.Second))
	in, err := daemon.Open(context.Background(), daemon.Options{DataDir: dir, Store: st, Clock: clock})
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
	return &meshCA{dir: dir, addr: lis.Addr().String(), in: in, st: st, clock: clock}
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
func (c *meshCA) report(t *testing.T, node, peer string, cert *store.Cert, roots ...string) {
	t.Helper()
	c.reportRestart(t, node, peer, cert, false, roots...)
}

// reportRestart is report, with the sidecar saying whether its pluto must
// start again (a CA key left its NSS database); it returns the CA's reply.
func (c *meshCA) reportRestart(t *testing.T, node, peer string, cert *store.Cert, due bool,
	roots ...string) *ca.ReportReply {
	t.Helper()
	var inventory []store.InventoryEntry
	for _, r := range roots {
		inventory = append(inventory, store.InventoryEntry{Nickname: "ovs_cert_cacert", Serial: r, Trust: "CT,,"})
	}
	reply, err := c.in.Authority.ReportInventory(context.Background(), node, store.Report{TunnelsReported: true,
		Entries: inventory, Tunnels: []store.TunnelRecord{{Peer: peer, Established: true, IKEState: 1,
			ChildSAs: 2, AuthenticatedAt: time.Now(), LocalSerial: cert.Serial}}, PlutoRestartDue: due})
	if err != nil {
		t.Fatal(err)
	}
	return reply
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
	if err := clijson.Unmarshal([]byte(out), resp); err != nil {
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
		// With JSON output the error is JSON too.
		!strings.Contains(errOut, `not converged after 300ms: 1 of 2 pairs pending:\n  node-a -> node-b: superseded`) ||
		!strings.Contains(errOut, `"code":"Unknown","exitCode":1}`) {
		t.Errorf("mesh status --wait on a mesh that does not converge: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = c.cli("mesh", "status")
	if code != 0 || !strings.HasSuffix(out, "2 pairs, 1 current; not converged\n") {
		t.Errorf("mesh status after the renewal: exit %d\n%s", code, out)
	}
}

// events counts the audit events of type typ.
func (c *meshCA) events(t *testing.T, typ string) int {
	t.Helper()
	evs, _, err := c.st.ListEvents(context.Background(), store.EventFilter{Type: typ, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

// waitEvents waits until there are n audit events of type typ.
func (c *meshCA) waitEvents(t *testing.T, typ string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); c.events(t, typ) < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %d %s events", n, typ)
		}
	}
}

type cliResult struct {
	code     int
	out, err string
}

// cliAsync runs ipsecca in the background.
func (c *meshCA) cliAsync(args ...string) <-chan cliResult {
	done := make(chan cliResult, 1)
	go func() {
		code, out, err := c.cli(args...)
		done <- cliResult{code, out, err}
	}()
	return done
}

// renewAll issues node-a and node-b new certificates and has each report
// its tunnel presenting its new one.
// current is node's active certificate.
func (c *meshCA) current(t *testing.T, node string) *store.Cert {
	t.Helper()
	cert, err := c.st.CurrentCert(context.Background(), node)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// renewAll gives both nodes new certificates and reports their tunnels,
// each node's NSS holding roots.
func (c *meshCA) renewAll(t *testing.T, roots ...string) {
	t.Helper()
	a, b := c.issue(t, "node-a"), c.issue(t, "node-b")
	c.report(t, "node-a", "node-b", a, roots...)
	c.report(t, "node-b", "node-a", b, roots...)
}

// rotate --wait waits for every pair to authenticate with a certificate
// issued after it started; it times out naming the pairs still on the
// certificates of before.
func TestRotateWait(t *testing.T) {
	defer func(d time.Duration) { meshPoll = d }(meshPoll)
	meshPoll = 50 * time.Millisecond
	c := startMeshCA(t)
	c.renewAll(t)
	code, out, errOut := c.cli("rotate", "--all", "--wait", "300ms")
	if code != 1 || !strings.Contains(out, "2 certificate(s) scheduled for rotation") ||
		!strings.Contains(errOut, "mesh: 0/2 pairs done; pending: 2 current\n") ||
		!strings.Contains(errOut, "not rotated after 300ms: 2 of 2 pairs pending:\n  node-a -> node-b: current") {
		t.Errorf("rotate --all --wait, nobody renewing: exit %d\n%s%s", code, out, errOut)
	}
	done := c.cliAsync("rotate", "--all", "--wait", "20s")
	c.waitEvents(t, store.EventRotationForced, 4)
	c.renewAll(t)
	if r := <-done; r.code != 0 || !strings.Contains(r.err, "mesh: rotated (2 pairs)\n") {
		t.Errorf("rotate --all --wait: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if code, _, errOut := c.cli("rotate", "--node", "node-a", "--wait", "-1s"); code != 2 {
		t.Errorf("rotate --wait -1s: exit %d %s", code, errOut)
	}
}

// ca renew --wait waits for every pair to authenticate with a certificate
// issued under the new root: until the nodes rotate, they are old-root.
func TestRenewCAWait(t *testing.T) {
	defer func(d time.Duration) { meshPoll = d }(meshPoll)
	meshPoll = 50 * time.Millisecond
	c := startMeshCA(t)
	rootNow := func() string { return ca.SerialString(c.in.Authority.Root().Cert.SerialNumber) }
	first := rootNow()
	c.renewAll(t, first)
	c.clock.Add(2 * time.Second)
	code, out, errOut := c.cli("ca", "renew", "--wait", "300ms")
	root := rootNow()
	if code != 1 || !strings.Contains(strings.Join(strings.Fields(out), " "), "issuing "+root) ||
		!strings.Contains(errOut, "mesh: 0/2 pairs done; pending: 2 current\n") ||
		!strings.Contains(errOut, "not every node trusts root "+root+" after 300ms: 2 of 2 pairs pending:\n"+
			"  node-a -> node-b: current") {
		t.Errorf("ca renew --wait, the nodes holding only the first root: exit %d\n%s%s", code, out, errOut)
	}
	c.clock.Add(2 * time.Second)
	done := c.cliAsync("ca", "renew", "--wait", "20s", "--json")
	c.waitEvents(t, store.EventCARenewed, 2)
	root = rootNow()
	c.clock.Add(time.Second)
	// Certificates from before a same-key renewal stay current: the nodes
	// need only trust the new root.
	c.report(t, "node-a", "node-b", c.current(t, "node-a"), root, first)
	c.report(t, "node-b", "node-a", c.current(t, "node-b"), root, first)
	r := <-done
	if r.code != 0 || !strings.Contains(r.err, "mesh: every node trusts root "+root+" (2 pairs)\n") {
		t.Errorf("ca renew --wait: exit %d\n%s%s", r.code, r.out, r.err)
	}
	resp := new(ipseccav1.GetCAResponse)
	if err := clijson.Unmarshal([]byte(r.out), resp); err != nil || resp.GetRoots()[0].GetSerial() != root {
		t.Errorf("ca renew --json --wait: %v\n%s", err, r.out)
	}
	if code, out, errOut := c.cli("ca", "show", "--wait", "1s"); code != 2 {
		t.Errorf("ca show --wait: exit %d\n%s%s", code, out, errOut)
	}
}
