package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/store"
)

// The key id is the one the shell computes from the certificate with
// openssl (the modulus) and base64, as an operator checks pluto's list.
func TestLibreswanKeyIDMatchesShell(t *testing.T) {
	for _, tool := range []string{"openssl", "bash", "base64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install openssl coreutils bash (make deps)", tool)
		}
	}
	const script = `m=$(openssl x509 -in "$1" -noout -modulus | cut -d= -f2)
printf '%b' "$(echo "03010001$m" | sed 's/../\\x&/g')" | base64 -w0 | cut -c1-9`
	for _, bits := range []int{2048, 3072} {
		key := mustRSA(t, bits).(*rsa.PrivateKey)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node-a"},
			NotBefore: t0, NotAfter: t0.AddDate(1, 0, 0)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "c.pem")
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if err := os.WriteFile(path, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("bash", "-c", script, "keyid", path).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		want := strings.TrimSpace(string(out))
		if got := LibreswanKeyID(&key.PublicKey); got != want || len(got) != 9 || !strings.HasPrefix(got, "AwEAA") {
			t.Errorf("RSA-%d: key id %q, the shell says %q", bits, got, want)
		}
	}
	// Another exponent (3: 01 03), and a blob shorter than 9 characters
	// of base64 (its padding kept).
	if got := LibreswanKeyID(&rsa.PublicKey{N: big.NewInt(0xabcdef), E: 3}); got != "AQOrze8=" {
		t.Errorf("short blob: %q", got)
	}
}

// meshNode is a node of the mesh tests: its key and certificate.
type meshNode struct {
	key  crypto.Signer
	cert *store.Cert
}

// issueMesh issues a node certificate for name with key.
func issueMesh(t *testing.T, a *Authority, name string, key crypto.Signer, life time.Duration) meshNode {
	t.Helper()
	c, err := a.IssueForNode(context.Background(), NodeRequest{
		CSRPEM:   makeCSR(t, csrOpts{key: key, cn: name}),
		Identity: Identity{Node: name, CN: name}, Via: "kube", Actor: "test", MaxLifetime: life,
	})
	if err != nil {
		t.Fatal(err)
	}
	return meshNode{key: key, cert: c}
}

// seen is the tunnel of a peer that authenticated with n's certificate,
// as pluto reports it.
func (n meshNode) seen(peer string, state uint64) store.TunnelRecord {
	t := store.TunnelRecord{Peer: peer, PeerAddress: "10.0.0.1", Established: true, IKEState: state,
		PeerNotAfter: n.cert.NotAfter, AuthenticatedAt: t0, ChildSAs: 2, ChildAddedAt: t0}
	if pub, ok := n.key.Public().(*rsa.PublicKey); ok {
		t.PeerKeyID = LibreswanKeyID(pub)
	}
	return t
}

// Every pair state, from one node's report: current, superseded after a
// renewal (with a new key, and with the same key, told apart by NotAfter),
// revoked (its IKE SA is also in the reply), expired at the given time,
// current still after a same-key root renewal, unknown and down
// (old-root: TestPairStateOldRoot).
func TestMeshStatusStates(t *testing.T) {
	a, _, clock := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	oldRoot := SerialString(a.Root().Cert.SerialNumber)
	old := issueMesh(t, a, "old", mustRSA(t, 2048), 0)
	clock.Add(time.Hour)
	r, err := a.RenewRoot(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	newRoot := SerialString(r.Cert.SerialNumber)
	clock.Add(time.Hour)
	issueMesh(t, a, "node-a", mustECDSA(t, elliptic.P256()), 0)
	cur := issueMesh(t, a, "cur", mustRSA(t, 2048), 0)
	ec := issueMesh(t, a, "ec", mustECDSA(t, elliptic.P256()), 0)
	sup := issueMesh(t, a, "sup", mustRSA(t, 2048), 0)
	issueMesh(t, a, "sup", mustRSA(t, 2048), 0)
	same := issueMesh(t, a, "same", mustRSA(t, 2048), 0)
	clock.Add(time.Hour)
	sameNext := issueMesh(t, a, "same", same.key, 0)
	rev := issueMesh(t, a, "rev", mustRSA(t, 2048), 0)
	if _, err := a.RevokeNode(ctx, "rev", "test", "test"); err != nil {
		t.Fatal(err)
	}
	exp := issueMesh(t, a, "exp", mustRSA(t, 2048), 10*time.Minute)

	unknown := cur.seen("cur", 9)
	unknown.PeerKeyID = "AwEAAzzzz"
	down := store.TunnelRecord{Peer: "dwn", PeerAddress: "10.0.0.9"}
	tunnels := []store.TunnelRecord{
		cur.seen("Cur", 1), ec.seen("ec", 2), sup.seen("sup", 3), same.seen("same", 4),
		rev.seen("rev", 5), exp.seen("exp", 6), old.seen("old", 7), down,
		sameNext.seen("same", 8), // the same key as 4, the newer certificate
		cur.seen("ghost", 10), unknown,
	}
	reply, err := a.ReportInventory(ctx, "node-a", store.Report{TunnelsReported: true, Tunnels: tunnels})
	if err != nil {
		t.Fatal(err)
	}
	if states := reply.RevokedIKEStates; !slices.Equal(states, []uint64{5}) {
		t.Errorf("revoked IKE states %v; want [5] (the revoked peer's)", states)
	}
	// node-b reports an empty tunnel list; node-c (no report) is not counted.
	issueMesh(t, a, "node-b", mustECDSA(t, elliptic.P256()), 0)
	issueMesh(t, a, "node-c", mustECDSA(t, elliptic.P256()), 0)
	if _, err := a.ReportInventory(ctx, "node-b", store.Report{TunnelsReported: true}); err != nil {
		t.Fatal(err)
	}

	mesh, err := a.MeshStatus(ctx, clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		peer, state, serial, root string
		ike                       uint64
	}{
		{"cur", PairCurrent, cur.cert.Serial, newRoot, 1},
		{"cur", PairUnknown, "", "", 9},
		{"dwn", PairDown, "", "", 0},
		{"ec", PairCurrent, ec.cert.Serial, newRoot, 2},
		{"exp", PairExpired, exp.cert.Serial, newRoot, 6},
		{"ghost", PairUnknown, "", "", 10},
		// Issued before a same-key renewal: the renewed root verifies it.
		{"old", PairCurrent, old.cert.Serial, oldRoot, 7},
		{"rev", PairRevoked, rev.cert.Serial, newRoot, 5},
		{"same", PairSuperseded, same.cert.Serial, newRoot, 4},
		{"same", PairCurrent, sameNext.cert.Serial, newRoot, 8},
		{"sup", PairSuperseded, sup.cert.Serial, newRoot, 3},
	}
	if len(mesh.Pairs) != len(want) {
		t.Fatalf("%d pairs; want %d: %+v", len(mesh.Pairs), len(want), mesh.Pairs)
	}
	for i, w := range want {
		p := mesh.Pairs[i]
		if p.Node != "node-a" || p.Peer != w.peer || p.State != w.state || p.PeerSerial != w.serial ||
			p.PeerRootSerial != w.root || p.IKEState != w.ike {
			t.Errorf("pair %d: %+v; want %+v", i, p, w)
		}
		if p.State != PairDown && (p.ChildSAs != 2 || !p.AuthenticatedAt.Equal(t0) || p.ReportedAt.IsZero()) {
			t.Errorf("pair %d: children %d, authenticated %s, reported %s", i, p.ChildSAs, p.AuthenticatedAt,
				p.ReportedAt)
		}
	}
	if mesh.CurrentRootSerial != newRoot || mesh.NodesReporting != 2 || mesh.Converged {
		t.Errorf("root %s (want %s), %d reporting (want 2), converged %v", mesh.CurrentRootSerial, newRoot,
			mesh.NodesReporting, mesh.Converged)
	}
	counts := mesh.Counts()
	if len(counts) != len(PairStates) || counts[PairCurrent] != 4 || counts[PairUnknown] != 2 {
		t.Errorf("counts %v", counts)
	}
}

// Two nodes that see each other's active certificates have converged; a
// report without tunnels keeps them; a renewal the peers have not seen yet
// breaks convergence, and a new tunnel report restores it.
func TestMeshStatusConverges(t *testing.T) {
	a, st, clock := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	nodeA := issueMesh(t, a, "node-a", mustRSA(t, 2048), 0)
	nodeB := issueMesh(t, a, "node-b", mustRSA(t, 2048), 0)
	report := func(node string, tunnels ...store.TunnelRecord) {
		t.Helper()
		if _, err := a.ReportInventory(ctx, node, store.Report{TunnelsReported: true, Tunnels: tunnels}); err != nil {
			t.Fatal(err)
		}
	}
	status := func() *Mesh {
		t.Helper()
		m, err := a.MeshStatus(ctx, clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := status(); m.Converged || len(m.Pairs) != 0 || m.NodesReporting != 0 {
		t.Fatalf("nothing reported: %+v", m)
	}
	report("node-a", nodeB.seen("node-b", 1))
	report("node-b", nodeA.seen("node-a", 1))
	if m := status(); !m.Converged || len(m.Pairs) != 2 || m.NodesReporting != 2 {
		t.Fatalf("both current: %+v", m)
	}
	// An inventory-only report keeps the tunnels.
	inv := []store.InventoryEntry{{Nickname: "ovs_cert_cacert", Serial: "1", Trust: "CT,,"}}
	if _, err := a.ReportInventory(ctx, "node-a", store.Report{Entries: inv}); err != nil {
		t.Fatal(err)
	}
	if m := status(); !m.Converged || len(m.Pairs) != 2 {
		t.Fatalf("after a report without tunnels: %+v", m)
	}
	if n, err := st.Node(ctx, "node-a"); err != nil || len(n.Inventory) != 1 || len(n.Tunnels) != 1 {
		t.Fatalf("node-a: %+v %v", n, err)
	}
	clock.Add(time.Minute)
	nodeB2 := issueMesh(t, a, "node-b", mustRSA(t, 2048), 0)
	m := status()
	if m.Converged || m.Pairs[0].State != PairSuperseded || m.Pairs[1].State != PairCurrent {
		t.Fatalf("after node-b renewed: %+v", m)
	}
	report("node-a", nodeB2.seen("node-b", 2))
	if m := status(); !m.Converged || m.Pairs[0].PeerSerial != nodeB2.cert.Serial {
		t.Fatalf("after node-a re-authenticated node-b: %+v", m)
	}
	if _, err := a.ReportInventory(ctx, "nobody", store.Report{}); err == nil {
		t.Fatal("a report of an unknown node was stored")
	}
}

// When pluto lists no peer key (libreswan 4.10), the peer's own report of
// the certificate its tunnel presents tells which one the pair
// authenticated with; a node forgotten since, its name taken by another,
// speaks no more for that name.
func TestMeshStatusPresentedSerial(t *testing.T) {
	a, _, clock := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	nodeA := issueMesh(t, a, "node-a", mustECDSA(t, elliptic.P256()), 0)
	nodeB := issueMesh(t, a, "node-b", mustECDSA(t, elliptic.P256()), 0)
	nodeR := issueMesh(t, a, "node-r", mustECDSA(t, elliptic.P256()), 0)
	up := func(peer string, state uint64, presents meshNode) store.TunnelRecord {
		return store.TunnelRecord{Peer: peer, Established: true, IKEState: state, ChildSAs: 2,
			LocalSerial: "0" + strings.ToUpper(presents.cert.Serial)}
	}
	report := func(node string, tunnels ...store.TunnelRecord) []uint64 {
		t.Helper()
		reply, err := a.ReportInventory(ctx, node, store.Report{TunnelsReported: true, Tunnels: tunnels})
		if err != nil {
			t.Fatal(err)
		}
		return reply.RevokedIKEStates
	}
	pairs := func() string {
		t.Helper()
		m, err := a.MeshStatus(ctx, clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range m.Pairs {
			out = append(out, p.Node+">"+p.Peer+":"+p.State+":"+p.PeerSerial)
		}
		return strings.Join(out, " ")
	}
	report("node-b", up("node-a", 1, nodeB))
	report("node-r", up("node-a", 1, nodeR))
	if _, err := a.RevokeNode(ctx, "node-r", "test", "test"); err != nil {
		t.Fatal(err)
	}
	tunnels := []store.TunnelRecord{up("node-b", 2, nodeA), up("node-r", 3, nodeA), up("node-c", 4, nodeA)}
	if got := report("node-a", tunnels...); !slices.Equal(got, []uint64{3}) {
		t.Errorf("revoked IKE states %v; want [3]", got)
	}
	b, r := nodeB.cert.Serial, nodeR.cert.Serial
	// node-r, revoked, reports no more: its last report is not listed, but
	// still says what node-a's peer presented.
	want := "node-a>node-b:current:" + b + " node-a>node-c:unknown: node-a>node-r:revoked:" + r +
		" node-b>node-a:current:" + nodeA.cert.Serial
	if got := pairs(); got != want {
		t.Errorf("pairs\n %s\nwant\n %s", got, want)
	}
	// node-b renews: superseded until its report names the new certificate.
	clock.Add(time.Minute)
	nodeB2 := issueMesh(t, a, "node-b", mustECDSA(t, elliptic.P256()), 0)
	if got := pairs(); !strings.HasPrefix(got, "node-a>node-b:superseded:"+b+" ") {
		t.Errorf("after node-b renewed: %s", got)
	}
	report("node-b", up("node-a", 5, nodeB2))
	if got := pairs(); !strings.HasPrefix(got, "node-a>node-b:current:"+nodeB2.cert.Serial+" ") {
		t.Errorf("after node-b reported its new certificate: %s", got)
	}
	// node-r is forgotten and node-g takes its name: node-r's old report no
	// longer says what "node-r" presents.
	if _, err := a.ForgetNode(ctx, "node-r", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.IssueForNode(ctx, NodeRequest{CSRPEM: makeCSR(t, csrOpts{cn: "node-r"}),
		Identity: Identity{Node: "node-g", CN: "node-r"}, Via: "kube", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	if got := report("node-a", tunnels...); len(got) != 0 {
		t.Errorf("revoked IKE states after the name moved: %v", got)
	}
	if got := pairs(); !strings.Contains(got, "node-a>node-r:unknown: ") {
		t.Errorf("after the name moved: %s", got)
	}
}

// A certificate whose root has another key than the current one is on an
// old root; one from a same-key root (or the current one) is current.
func TestPairStateOldRoot(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	root := func() *x509.Certificate {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "r"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	current, other := root(), root()
	c := &store.Cert{State: store.StateActive, NotAfter: now.Add(time.Hour)}
	for _, tc := range []struct {
		issuer *x509.Certificate
		want   string
	}{{current, PairCurrent}, {other, PairOldRoot}, {nil, PairOldRoot}} {
		if got := pairState(c, tc.issuer, current, now); got != tc.want {
			t.Errorf("pairState(issuer %v) = %s, want %s", tc.issuer != nil, got, tc.want)
		}
	}
}

// After a rotation, the side of each pair whose name sorts first is asked
// to authenticate the pair's IKE SA again, whichever side rotated; the
// other side is never asked (two new IKE SAs at once would cross).
func TestReportAsksToReauthenticate(t *testing.T) {
	a, _, clock := newTestAuthority(t, KeyECDSAP256)
	ctx := context.Background()
	nodeA := issueMesh(t, a, "node-a", mustECDSA(t, elliptic.P256()), 0)
	nodeB := issueMesh(t, a, "node-b", mustECDSA(t, elliptic.P256()), 0)
	presents := func(peer string, state uint64, n meshNode) store.TunnelRecord {
		return store.TunnelRecord{Peer: peer, Established: true, IKEState: state, LocalSerial: n.cert.Serial}
	}
	ask := func(node string, tu store.TunnelRecord) []uint64 {
		t.Helper()
		reply, err := a.ReportInventory(
			ctx,
			node,
			store.Report{TunnelsReported: true, Tunnels: []store.TunnelRecord{tu}},
		)
		if err != nil {
			t.Fatal(err)
		}
		return reply.ReauthenticateIKEStates
	}
	if got := ask("node-b", presents("node-a", 7, nodeB)); got != nil {
		t.Errorf("all current: node-b asked to re-authenticate %v", got)
	}
	if got := ask("node-a", presents("node-b", 3, nodeA)); got != nil {
		t.Errorf("all current: node-a asked to re-authenticate %v", got)
	}
	// node-b rotates; its tunnel still presents the old certificate.
	clock.Add(time.Minute)
	issueMesh(t, a, "node-b", mustECDSA(t, elliptic.P256()), 0)
	if got := ask("node-b", presents("node-a", 7, nodeB)); got != nil {
		t.Errorf("node-b rotated: node-b (second in order) asked to re-authenticate %v", got)
	}
	if got := ask("node-a", presents("node-b", 3, nodeA)); !slices.Equal(got, []uint64{3}) {
		t.Errorf("node-b rotated: node-a asked to re-authenticate %v, want [3]", got)
	}
	// node-a rotates too: it is asked for its own side, until both present
	// their current certificates.
	newA := issueMesh(t, a, "node-a", mustECDSA(t, elliptic.P256()), 0)
	if got := ask("node-a", presents("node-b", 3, nodeA)); !slices.Equal(got, []uint64{3}) {
		t.Errorf("both rotated: node-a asked %v, want [3]", got)
	}
	newB, err := a.st.CurrentCert(ctx, "node-b")
	if err != nil {
		t.Fatal(err)
	}
	ask("node-b", store.TunnelRecord{Peer: "node-a", Established: true, IKEState: 9, LocalSerial: newB.Serial})
	if got := ask("node-a", presents("node-b", 8, newA)); got != nil {
		t.Errorf("re-authenticated: node-a asked %v", got)
	}
}
