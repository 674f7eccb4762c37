package kube_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/sidecar"
	"github.com/ipsecca/ipsecca/store"
)

// publishedCRL reads the CRL from the bundle ConfigMap (nil when absent)
// and checks that it is signed by the current root.
func (e *env) publishedCRL() *x509.RevocationList {
	e.t.Helper()
	cm, err := e.admin.CoreV1().ConfigMaps(cmNS).Get(context.Background(), cmName, metav1.GetOptions{})
	if err != nil || cm.Data[kube.CRLKey] == "" {
		return nil
	}
	b, rest := pem.Decode([]byte(cm.Data[kube.CRLKey]))
	if b == nil || b.Type != "X509 CRL" || len(strings.TrimSpace(string(rest))) > 0 {
		e.t.Fatalf("%s is not one PEM X509 CRL: %q", kube.CRLKey, cm.Data[kube.CRLKey])
	}
	l, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := l.CheckSignatureFrom(e.auth.Root().Cert); err != nil {
		e.t.Fatalf("the published CRL is not signed by the root: %v", err)
	}
	return l
}

func lists(l *x509.RevocationList, serials ...string) bool {
	if l == nil {
		return false
	}
	var got []string
	for _, r := range l.RevokedCertificateEntries {
		got = append(got, ca.SerialString(r.SerialNumber))
	}
	for _, s := range serials {
		if !slices.Contains(got, s) {
			return false
		}
	}
	return true
}

// issue gets node a certificate through a CSR and returns its serial.
func (e *env) issue(node, id string) string {
	e.t.Helper()
	csr := e.createCSR(e.node(node), makeCSR(e.t, ecKey(e.t), id, []string{id}), csrSpec{node: node})
	return ca.SerialString(parseCert(e.t,
		waitCertificate(e.t, e.node(node), csr.Name, 5*time.Second).Status.Certificate).SerialNumber)
}

// The bundle ConfigMap carries the CA's CRL (ca-crl.pem), signed by the
// root: a revocation the signer is told of is there at once, one it is
// not told of (another door, another replica) within Resync; an unchanged
// set of revocations is not rewritten although the Authority signs a new
// CRL each time; a CRL nearing its NextUpdate is replaced.
func TestCRLPublished(t *testing.T) {
	e := newEnv(t)
	e.store, e.auth = newCA(t, e.clock) // the CA lives on the test's clock too
	ids := map[string]string{"node-a": chassisID(), "node-b": chassisID()}
	for n, id := range ids {
		e.addNode(n, id)
	}
	reg := prometheus.NewRegistry()
	cfg := e.config("replica-1")
	cfg.Metrics, cfg.Resync = reg, time.Hour // nothing periodic: only being told
	s := e.start(cfg, true)
	ctx := context.Background()

	eventually(t, 30*time.Second, "a CRL in the ConfigMap", func() bool { return e.publishedCRL() != nil })
	if l := e.publishedCRL(); len(l.RevokedCertificateEntries) != 0 {
		t.Fatalf("the first CRL lists %d certificates, want none", len(l.RevokedCertificateEntries))
	}
	serialA, serialB := e.issue("node-a", ids["node-a"]), e.issue("node-b", ids["node-b"])

	if _, err := e.auth.RevokeNode(ctx, "node-a", "key compromised", "admin"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.Revoked("node-a", "key compromised")
	eventually(t, 30*time.Second, "the revoked serial in the published CRL",
		func() bool { return lists(e.publishedCRL(), serialA) })
	t.Logf("revocation to published CRL: %s", time.Since(start).Round(time.Millisecond))
	if lists(e.publishedCRL(), serialB) {
		t.Fatal("the CRL lists node-b, which was not revoked")
	}
	for why, want := range map[string]float64{"created": 1, "revocations": 1} {
		if got := counter(t, reg, "ipsecca_kube_crl_writes_total", map[string]string{"why": why}); got != want {
			t.Fatalf("CRL writes (%s): %v, want %v", why, got, want)
		}
	}
	s.Stop()

	// A replica that checks every 200 ms.
	reg2 := prometheus.NewRegistry()
	cfg = e.config("replica-2")
	cfg.Metrics, cfg.Resync = reg2, 200*time.Millisecond
	e.start(cfg, true)
	time.Sleep(1500 * time.Millisecond) // several checks, each with a newly signed CRL
	if n := counter(t, reg2, "ipsecca_kube_crl_writes_total", nil); n != 0 {
		t.Fatalf("%v CRL writes without a change in the revocations, want 0", n)
	}
	// Revoked through another door: nobody tells the signer.
	if _, err := e.auth.RevokeNode(ctx, "node-b", "decommissioned", "admin"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "node-b's serial published by the periodic check",
		func() bool { return lists(e.publishedCRL(), serialA, serialB) })

	before := e.publishedCRL().NextUpdate
	e.clock.Advance(ca.CRLValidity - 12*time.Hour)
	eventually(t, 30*time.Second, "a CRL with a later NextUpdate before the old one runs out", func() bool {
		l := e.publishedCRL()
		return l.NextUpdate.After(before) && lists(l, serialA, serialB)
	})
}

// nssCRLSerials lists the serials of the CRL an NSS database holds for
// the CA (crlutil -L): nil when it holds none, empty when the CRL is.
func nssCRLSerials(t *testing.T, dir string) []string {
	t.Helper()
	out, err := exec.Command("crlutil", "-L", "-d", "sql:"+dir, "-n", sidecar.CANickname).CombinedOutput()
	if err != nil {
		return nil
	}
	var serials []string
	re := regexp.MustCompile(`(?s)Serial Number:\s*([0-9a-fA-F:\s]+?)\s*Revocation Date`)
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		hex := strings.NewReplacer(":", "", " ", "", "\n", "", "\t", "").Replace(m[1])
		n, ok := new(big.Int).SetString(hex, 16)
		if !ok {
			t.Fatalf("crlutil serial %q", m[1])
		}
		serials = append(serials, ca.SerialString(n))
	}
	return append([]string{}, serials...) // non-nil: a CRL is there
}

// The Kubernetes-mode sidecar imports the ConfigMap's CRL into the node's
// real NSS database (crlutil), and a running one takes a new CRL within
// its poll interval. It asks with the Node's chassis-id in lower case
// (the annotation is upper case here), so a second pass creates no CSR.
func TestSidecarKubeImportsCRL(t *testing.T) {
	e := newEnv(t)
	idA := strings.ToUpper(chassisID())
	idB := chassisID()
	e.addNode("node-a", idA)
	e.addNode("node-b", idB)
	s := e.start(e.config("replica-1"), true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dir := t.TempDir()
	nss := filepath.Join(dir, "nss")
	nodeClient, err := sidecar.NewKubeClient(e.srv.ConfigFor(nodePrefix + "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	agent, err := sidecar.New(sidecar.Config{Node: "node-a", NSSDir: nss, StateDir: filepath.Join(dir, "state"),
		KeyType: "ecdsa-p256", Logger: testLogger(t, "sidecar"),
		Kube: &sidecar.KubeConfig{Client: nodeClient, Wait: 60 * time.Second, Poll: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if err := agent.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.nodeCerts("node-a"); len(got) != 1 || got[0].CommonName != strings.ToLower(idA) {
		t.Fatalf("node-a's certificates: %+v, want one for %s", got, strings.ToLower(idA))
	}
	if got := nssCRLSerials(t, nss); got == nil || len(got) != 0 {
		t.Fatalf("the NSS database's CRL lists %v; want an empty CRL imported", got)
	}
	if _, err := agent.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if csrs, err := e.admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{}); err != nil ||
		len(csrs.Items) != 1 {
		t.Fatalf("after a second pass: %d CSRs (%v), want 1", len(csrs.Items), err)
	}

	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	serialB := e.issue("node-b", idB)
	if _, err := e.auth.RevokeNode(ctx, "node-b", "stolen", "admin"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.Revoked("node-b", "stolen")
	eventually(t, 60*time.Second, "node-b's serial in node-a's NSS CRL",
		func() bool { return slices.Contains(nssCRLSerials(t, nss), serialB) })
	t.Logf("revocation to the node's NSS database: %s", time.Since(start).Round(time.Millisecond))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := agent.Check(context.Background()); err != nil {
		t.Fatalf("node-a's own certificate after the CRL import: %v", err)
	}
}

// A flood of CSRs from requesters that are not existing nodes: every one
// is Denied with its stable reason, counted in a metric, and none adds an
// audit record (anyone who may create CSRs could otherwise grow the audit
// log at will).
func TestNonNodeCSRFlood(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	cfg := e.config("replica-1")
	cfg.Metrics = reg
	e.start(cfg, true)
	ctx := context.Background()
	countEvents := func() int {
		evs, _, err := e.store.ListEvents(ctx, store.EventFilter{Limit: 100000})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	eventsBefore := countEvents()

	const admins, ghosts = 190, 10
	id := chassisID()
	req := makeCSR(t, ecKey(t), id, []string{id})
	type made struct {
		name string
		want kube.Reason
	}
	var mu sync.Mutex
	var all []made
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < admins+ghosts; i += 8 {
				user, spec, want := kubetestAdmin, csrSpec{node: "x"}, kube.ReasonRequesterNotNode
				if i < ghosts {
					user, spec, want = nodePrefix+"ghost", csrSpec{node: "ghost"}, kube.ReasonNodeNotFound
				}
				c := e.createCSR(e.client(user), req, spec)
				mu.Lock()
				all = append(all, made{c.Name, want})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, m := range all {
		got := e.waitDecided(m.name, 30*time.Second)
		d := condition(got, certificatesv1.CertificateDenied)
		if d == nil || d.Reason != string(m.want) || len(got.Status.Certificate) > 0 {
			t.Fatalf("CSR %s: %+v; want Denied %s", m.name, got.Status, m.want)
		}
	}
	t.Logf("%d CSRs from non-nodes denied in %s", len(all), time.Since(start).Round(time.Millisecond))
	eventually(t, 20*time.Second, "every denial counted", func() bool {
		return counter(t, reg, "ipsecca_kube_csr_non_node_denials_total", nil) == admins+ghosts
	})
	if n := counter(t, reg, "ipsecca_kube_csr_non_node_denials_total",
		map[string]string{"reason": string(kube.ReasonNodeNotFound)}); n != ghosts {
		t.Fatalf("%v NodeNotFound denials counted, want %d", n, ghosts)
	}
	time.Sleep(200 * time.Millisecond)
	if grew := countEvents() - eventsBefore; grew > 2 {
		t.Fatalf("the audit log grew by %d records for %d CSRs from non-nodes, want at most 2", grew, len(all))
	}
}

const kubetestAdmin = "admin"

// A revoked node gets nothing through Kubernetes until an admin
// re-admits it: a CSR pending when it was revoked, one whose certificate
// was stored but not yet published, and every new one are Denied with
// reason NodeRevoked, once each (not retried); after ReadmitNode a new
// CSR is signed.
func TestRevokedNode(t *testing.T) {
	e := newEnv(t)
	id := chassisID()
	e.addNode("node-a", id)
	ctx := context.Background()

	first := e.start(e.config("replica-1"), true)
	serial1 := e.issue("node-a", id)
	first.Stop()

	// A signer killed between storing a certificate and publishing it.
	var once sync.Once
	stored := make(chan struct{})
	cfg := e.config("doomed")
	cfg.Hook = func(ctx context.Context, step string) error {
		if step == kube.StepStored {
			once.Do(func() { close(stored) })
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	doomed := e.start(cfg, true)
	unpublished := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), id, []string{id}), csrSpec{node: "node-a"})
	select {
	case <-stored:
	case <-time.After(5 * time.Second):
		t.Fatal("the signer never stored a certificate")
	}
	doomed.Stop()
	// And one asked while no signer runs.
	pending := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), id, []string{id}), csrSpec{node: "node-a"})

	n, err := e.auth.RevokeNode(ctx, "node-a", "key compromised", "admin")
	if err != nil || n != 2 {
		t.Fatalf("RevokeNode: %d certificates, %v; want 2 (the published one and the stored one)", n, err)
	}
	reg := prometheus.NewRegistry()
	cfg = e.config("replica-2")
	cfg.Metrics = reg
	e.start(cfg, true)

	denied := func(name string) {
		t.Helper()
		got := e.waitDecided(name, 5*time.Second)
		d := condition(got, certificatesv1.CertificateDenied)
		if d == nil || d.Reason != string(kube.ReasonNodeRevoked) || len(got.Status.Certificate) > 0 ||
			condition(got, certificatesv1.CertificateApproved) != nil {
			t.Fatalf("CSR %s: %+v; want Denied %s and no certificate", name, got.Status, kube.ReasonNodeRevoked)
		}
		if !strings.Contains(d.Message, "readmit") {
			t.Fatalf("Denied message %q does not say how to re-admit the node", d.Message)
		}
	}
	denied(unpublished.Name)
	denied(pending.Name)
	fresh := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), id, []string{id}), csrSpec{node: "node-a"})
	denied(fresh.Name)

	// Decided once each: nothing is retried.
	revokedDenials := func() int {
		n := 0
		for _, ev := range e.events("node-a") {
			if ev.Type == store.EventDenied && ev.Reason == string(ca.ReasonNodeRevoked) {
				n++
			}
		}
		return n
	}
	eventually(t, 20*time.Second, "3 NodeRevoked decisions counted", func() bool {
		return counter(t, reg, "ipsecca_kube_csr_decisions_total",
			map[string]string{"reason": string(kube.ReasonNodeRevoked)}) == 3
	})
	audited := revokedDenials()
	time.Sleep(1500 * time.Millisecond)
	if got := counter(t, reg, "ipsecca_kube_csr_decisions_total",
		map[string]string{"reason": string(kube.ReasonNodeRevoked)}); got != 3 {
		t.Fatalf("%v NodeRevoked decisions after a wait, want 3 (retried?)", got)
	}
	if again := revokedDenials(); again != audited || audited != 3 {
		t.Fatalf("node-revoked audit records: %d, then %d; want 3 (one per CSR), stable", audited, again)
	}
	for _, c := range e.nodeCerts("node-a") {
		if c.State != store.StateRevoked {
			t.Fatalf("node-a holds certificate %s in state %s while revoked", c.Serial, c.State)
		}
	}

	if err := e.auth.ReadmitNode(ctx, "node-a", "admin"); err != nil {
		t.Fatal(err)
	}
	serial2 := e.issue("node-a", id)
	if serial2 == serial1 {
		t.Fatal("the re-admitted node got its revoked certificate back")
	}
	var active []string
	for _, c := range e.nodeCerts("node-a") {
		if c.State == store.StateActive {
			active = append(active, c.Serial)
		}
	}
	if !slices.Equal(active, []string{serial2}) {
		t.Fatalf("active certificates of node-a: %v, want only %s", active, serial2)
	}
}

// A Node whose chassis-id annotation is in upper case, asking with an
// upper-case CN exactly as OVN's node script would, gets its certificate,
// for the name in lower case (libreswan compares IDs without regard to
// case); a second Node claiming the same id in lower case is refused.
func TestUpperCaseChassisID(t *testing.T) {
	e := newEnv(t)
	upper := strings.ToUpper(chassisID())
	lower := strings.ToLower(upper)
	e.addNode("node-a", upper)
	e.start(e.config("replica-1"), true)

	csr := e.createCSR(e.node("node-a"), opensslCSR(t, upper), csrSpec{node: "node-a"})
	cert := parseCert(t, waitCertificate(t, e.node("node-a"), csr.Name, 5*time.Second).Status.Certificate)
	if cert.Subject.CommonName != lower || !slices.Equal(cert.DNSNames, []string{lower}) {
		t.Fatalf("certificate CN %q SANs %v, want %s", cert.Subject.CommonName, cert.DNSNames, lower)
	}

	e.addNode("node-b", lower)
	other := e.createCSR(e.node("node-b"), makeCSR(t, ecKey(t), lower, []string{lower}), csrSpec{node: "node-b"})
	got := e.waitDecided(other.Name, 5*time.Second)
	if d := condition(got, certificatesv1.CertificateDenied); d == nil ||
		d.Reason != string(kube.ReasonCNHeldByOtherNode) {
		t.Fatalf("node-b claiming node-a's chassis-id in another case: %+v, want Denied %s",
			got.Status, kube.ReasonCNHeldByOtherNode)
	}
}
