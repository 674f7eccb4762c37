package integration

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/clijson"
	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// rolloverCluster is the CA side of a rollover test: one bbolt server or
// replicas over etcd, with a way to kill -9 the one that runs the
// rollover's steps (the leader) and bring it back.
type rolloverCluster struct {
	replicas []*serverProc
	// leader returns the index of the replica running the scheduler.
	leader func(t *testing.T) int
	down   int // index of a killed replica, -1 when all run
}

// env is the admin environment: every replica's address, live ones first,
// with the credentials of replica r.
func (c *rolloverCluster) env(r int) []string {
	var addrs []string
	for i, s := range c.replicas {
		if i != c.down {
			addrs = append(addrs, s.Addr)
		}
	}
	return []string{"IPSECCA_SERVER=" + strings.Join(addrs, ","), "IPSECCA_DATA_DIR=" + c.replicas[r].DataDir}
}

func (c *rolloverCluster) live() int {
	for i := range c.replicas {
		if i != c.down {
			return i
		}
	}
	return -1
}

// killLeader kills -9 the replica that runs the rollover's steps and, for
// a single server, starts it again at once; with replicas the others go on
// and the killed one comes back at the next restartDown (or kill).
func (c *rolloverCluster) killLeader(t *testing.T) {
	t.Helper()
	c.restartDown(t)
	li := c.leader(t)
	c.replicas[li].Kill()
	if len(c.replicas) == 1 {
		c.replicas[li].Start()
		return
	}
	c.down = li
}

func (c *rolloverCluster) restartDown(t *testing.T) {
	t.Helper()
	if c.down >= 0 {
		c.replicas[c.down].Start()
		c.down = -1
	}
}

func (c *rolloverCluster) status(t *testing.T) *ipseccav1.RolloverStatus {
	t.Helper()
	out := mustRun(t, c.env(c.live()), "ca", "rollover", "status", "--json")
	st := new(ipseccav1.RolloverStatus)
	if err := clijson.Unmarshal([]byte(out), st); err != nil {
		t.Fatalf("ca rollover status --json: %v\n%s", err, out)
	}
	return st
}

// rolloverNode is a node whose sidecar runs one pass (--once) when the
// test says, against every replica.
type rolloverNode struct {
	name, dir string
	c         *rolloverCluster
}

func (n *rolloverNode) pass(t *testing.T) {
	t.Helper()
	var addrs []string
	for i, s := range n.c.replicas {
		if i != n.c.down {
			addrs = append(addrs, s.Addr)
		}
	}
	r := run(t, nil, "sidecar", "--once", "--server", strings.Join(addrs, ","), "--ca-file",
		n.c.replicas[n.c.live()].CAFile(), "--node", n.name, "--token-file", filepath.Join(n.dir, "token"),
		"--nss-dir", filepath.Join(n.dir, "nss"), "--state-dir", filepath.Join(n.dir, "state"))
	if r.Code != 0 {
		t.Fatalf("sidecar --once %s: exit %d\n%s%s", n.name, r.Code, r.Stdout, r.Stderr)
	}
}

// nssRoots lists the serials of the self-signed CA certificates in the
// node's NSS database (certutil, as an operator would).
func (n *rolloverNode) nssRoots(t *testing.T) []string {
	t.Helper()
	return serialsUnder(t, filepath.Join(n.dir, "nss"), "ovs_cert_cacert")
}

// untilPhase runs the nodes' passes until the rollover reaches phase and
// is ready (or, for "", is over).
func untilPhase(t *testing.T, c *rolloverCluster, nodes []*rolloverNode, phase string, ready bool,
) *ipseccav1.RolloverStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, n := range nodes {
			n.pass(t)
		}
		st := c.status(t)
		if st.GetPhase() == phase && (st.GetReady() || !ready) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollover in phase %q (ready %v), want %q (ready %v); waiting for %v", st.GetPhase(),
				st.GetReady(), phase, ready, st.GetWaitingFor())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runRolloverWithKills moves the CA to a new key with two nodes while the
// replica running the rollover is killed -9 right after each transition:
// the rollover resumes where the store says, each node renews once onto
// the new key, the old CA leaves every NSS database, its certificates are
// revoked, and the audit chain verifies.
func runRolloverWithKills(t *testing.T, c *rolloverCluster) {
	var nodes []*rolloverNode
	for _, name := range []string{"node-a", "node-b"} {
		n := &rolloverNode{name: name, dir: t.TempDir(), c: c}
		tok := mustRun(t, c.env(0), "token", "create", "--node", name)
		if err := os.WriteFile(filepath.Join(n.dir, "token"), []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		n.pass(t)
		nodes = append(nodes, n)
	}
	out := mustRun(t, c.env(0), "ca", "rollover", "start", "--json")
	st := new(ipseccav1.RolloverStatus)
	if err := clijson.Unmarshal([]byte(out), st); err != nil || st.GetPhase() != "trust" {
		t.Fatalf("rollover start: %v\n%s", err, out)
	}
	newCA, oldCA := st.GetNewSerial(), st.GetOldSerial()

	// 1. trust, with the leader killed before any node took the new CA.
	c.killLeader(t)
	if st := c.status(t); st.GetPhase() != "trust" || st.GetNewSerial() != newCA {
		t.Fatalf("after kill -9 in the trust phase: %v", st)
	}
	st = untilPhase(t, c, nodes, "issue", false)
	for _, n := range nodes {
		if roots := n.nssRoots(t); !slices.Contains(roots, newCA) || !slices.Contains(roots, oldCA) {
			t.Errorf("%s: NSS roots %v in the issue phase, want both %s and %s", n.name, roots, newCA, oldCA)
		}
	}

	// 2. issue, killed as it starts: the nodes are still made due.
	c.killLeader(t)
	c.restartDown(t)
	st = untilPhase(t, c, nodes, "issue", true)
	for _, n := range st.GetNodes() {
		if !n.GetOnNew() || !n.GetTrustsNew() {
			t.Errorf("issue phase complete with %v", n)
		}
	}

	// 3. retire, killed right after finish.
	out = mustRun(t, c.env(c.live()), "ca", "rollover", "finish", "--json")
	if err := clijson.Unmarshal([]byte(out), st); err != nil || st.GetPhase() != "retire" {
		t.Fatalf("rollover finish: %v\n%s", err, out)
	}
	c.killLeader(t)
	untilPhase(t, c, nodes, "", false)
	c.restartDown(t)
	for _, n := range nodes {
		if roots := n.nssRoots(t); !slices.Equal(roots, []string{newCA}) {
			t.Errorf("%s: NSS roots %v after the rollover, want only %s", n.name, roots, newCA)
		}
	}
	show := mustRun(t, c.env(0), "ca", "show")
	if !strings.Contains(strings.Join(strings.Fields(show), " "), "issuing "+newCA) || strings.Contains(show, oldCA) {
		t.Errorf("ca show after the rollover:\n%s", show)
	}

	// Nothing issued twice: one renewal per node since the start, and the
	// node certificates of the old key are all revoked or superseded.
	events := new(ipseccav1.ListEventsResponse)
	if err := clijson.Unmarshal([]byte(mustRun(t, c.env(0), "audit", "list", "--type", "cert.renewed", "--json")),
		events); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		got := 0
		for _, e := range events.GetEvents() {
			if e.GetNode() == n.name {
				got++
			}
		}
		if got != 1 {
			t.Errorf("%s renewed %d times during the rollover, want once", n.name, got)
		}
	}
	caResp := new(ipseccav1.GetCAResponse)
	if err := clijson.Unmarshal([]byte(mustRun(t, c.env(0), "ca", "show", "--json")), caResp); err != nil {
		t.Fatal(err)
	}
	newRoot, err := x509.ParseCertificate(firstPEM(t, caResp.GetBundlePem()))
	if err != nil {
		t.Fatal(err)
	}
	certs := new(ipseccav1.ListCertificatesResponse)
	if err := clijson.Unmarshal([]byte(mustRun(t, c.env(0), "certs", "list", "--state", "active", "--json")),
		certs); err != nil {
		t.Fatal(err)
	}
	if len(certs.GetCertificates()) < 4 { // two nodes, an admin and a server certificate at least
		t.Fatalf("%d active certificates", len(certs.GetCertificates()))
	}
	for _, rec := range certs.GetCertificates() {
		cert, err := x509.ParseCertificate(firstPEM(t, rec.GetCertificatePem()))
		if err != nil || cert.CheckSignatureFrom(newRoot) != nil {
			t.Errorf("active %s certificate %s (%s) is not from the new key: %v", rec.GetKind(), rec.GetSerial(),
				rec.GetNode(), err)
		}
	}
	if r := run(t, c.env(0), "audit", "verify"); r.Code != 0 {
		t.Errorf("audit verify: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
}

func firstPEM(t *testing.T, b []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("not PEM: %q", b)
	}
	return block.Bytes
}

func TestRolloverSurvivesKill9(t *testing.T) {
	srv := startServer(t, "")
	c := &rolloverCluster{replicas: []*serverProc{srv}, leader: func(*testing.T) int { return 0 }, down: -1}
	runRolloverWithKills(t, c)
}

func TestRolloverOnEtcdLeaderFailover(t *testing.T) {
	h := startHA(t, 2)
	c := &rolloverCluster{replicas: h.replicas, down: -1}
	c.leader = func(t *testing.T) int {
		t.Helper()
		deadline := time.Now().Add(3 * haSessionTTL)
		for {
			if st := h.status(t, c.live()); st.Leader != "" && h.index(st.Leader) >= 0 &&
				h.index(st.Leader) != c.down {
				return h.index(st.Leader)
			}
			if time.Now().After(deadline) {
				t.Fatal(fmt.Errorf("no leader among the live replicas"))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	runRolloverWithKills(t, c)
}

// A subordinate CA moves to a new key through its organisation's root: the
// new key's request waits (phase request) until `ca import` brings its
// certificate, then trust, issue and retire run as for a root; the nodes
// end with the organisation's root as their anchor and only the new
// subordinate as the intermediate.
func TestSubordinateRollover(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "ca")
	rootPEM, rootKey, ext := orgRoot(t, dir)
	mustRun(t, nil, "init", "--subordinate", "--data-dir", data)
	sub := filepath.Join(dir, "sub.pem")
	opensslSign(t, filepath.Join(data, "ca.csr"), rootPEM, rootKey, ext, 3650, sub)
	mustRun(t, nil, "ca", "import", "--data-dir", data, sub, "--chain", rootPEM)
	srv := startServer(t, data)
	c := &rolloverCluster{replicas: []*serverProc{srv}, leader: func(*testing.T) int { return 0 }, down: -1}
	var nodes []*rolloverNode
	for _, name := range []string{"node-a", "node-b"} {
		n := &rolloverNode{name: name, dir: t.TempDir(), c: c}
		if err := os.WriteFile(filepath.Join(n.dir, "token"),
			[]byte(mustRun(t, srv.Env(), "token", "create", "--node", name)), 0o600); err != nil {
			t.Fatal(err)
		}
		n.pass(t)
		nodes = append(nodes, n)
	}

	csr := filepath.Join(dir, "roll.csr")
	r := run(t, srv.Env(), "ca", "rollover", "start", "--key-type", "ecdsa-p384", "--csr-out", csr)
	if r.Code != 0 || !strings.Contains(r.Stdout, "phase: request") ||
		!strings.Contains(r.Stderr, "wrote "+csr+": the new subordinate CA key's request (same subject)") {
		t.Fatalf("rollover start on a subordinate: %+v", r)
	}
	subSubject := strings.TrimSpace(sh(t, "openssl", "x509", "-in", sub, "-noout", "-subject"))
	if req := sh(t, "openssl", "req", "-in", csr, "-noout", "-verify", "-subject", "-text"); !strings.Contains(req,
		subSubject) || !strings.Contains(req, "CA:TRUE, pathlen:0") || !strings.Contains(req, "NIST CURVE: P-384") {
		t.Fatalf("the new key's request (want %s, P-384):\n%s", subSubject, req)
	}
	if r := run(t, srv.Env(), "ca", "rollover", "finish", "--force"); r.Code != 1 ||
		!strings.Contains(r.Stderr, "not imported yet") {
		t.Fatalf("finish --force before the import: %+v", r)
	}
	// Nothing is published before the import.
	untilPhase(t, c, nodes, "request", false)
	for _, n := range nodes {
		if got := len(intermediates(t, n)); got != 1 {
			t.Fatalf("%s holds %d intermediates before the import", n.name, got)
		}
	}
	newSub := filepath.Join(dir, "new-sub.pem")
	opensslSign(t, csr, rootPEM, rootKey, ext, 3650, newSub)
	if out := mustRun(t, srv.Env(), "ca", "import", newSub, "--chain", rootPEM); !strings.Contains(out,
		"CN=Example Root") {
		t.Fatalf("ca import of the new subordinate:\n%s", out)
	}
	untilPhase(t, c, nodes, "issue", true)
	mustRun(t, srv.Env(), "ca", "rollover", "finish")
	untilPhase(t, c, nodes, "", false)
	newSerial := strings.ToLower(strings.TrimLeft(strings.TrimPrefix(strings.TrimSpace(
		sh(t, "openssl", "x509", "-in", newSub, "-noout", "-serial")), "serial="), "0"))
	for _, n := range nodes {
		if got := intermediates(t, n); !slices.Equal(got, []string{newSerial}) {
			t.Errorf("%s: intermediates %v after the rollover, want only the new subordinate %s", n.name, got,
				newSerial)
		}
		sh(t, "openssl", "verify", "-CAfile", rootPEM, "-untrusted", newSub,
			filepath.Join(n.dir, "state", "node.pem"))
		certutilV(t, filepath.Join(n.dir, "nss"), "ovs_certkey_"+n.name)
	}
}

// intermediates lists the serials of the intermediate CA certificates in
// the node's NSS database.
func intermediates(t *testing.T, n *rolloverNode) []string {
	t.Helper()
	nss := filepath.Join(n.dir, "nss")
	var out []string
	for nick := range certutilL(t, nss) {
		if strings.HasPrefix(nick, "ipsecca-intermediate-") {
			out = append(out, serialsUnder(t, nss, nick)...)
		}
	}
	return out
}
