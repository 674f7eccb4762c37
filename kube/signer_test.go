package kube_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/internal/pemutil"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/store"
)

func chassisID() string { return uuid.NewString() }

// OpenShift's node flow, unchanged: an openssl CSR created by the node's
// own identity is approved and carries a certificate chaining to the
// ConfigMap's bundle within 2 s; the decision is stored, audited and
// counted.
func TestOpenShiftNodeFlow(t *testing.T) {
	e := newEnv(t)
	id := chassisID()
	e.addNode("node-a", id)
	reg := prometheus.NewRegistry()
	cfg := e.config("replica-1")
	cfg.Metrics = reg
	e.start(cfg, true)
	ctx := context.Background()

	// The node reads the CA as OVN-Kubernetes does (under the printed RBAC).
	var bundle string
	eventually(t, 5*time.Second, "the CA bundle ConfigMap", func() bool {
		cm, err := e.node("node-a").CoreV1().ConfigMaps(cmNS).Get(ctx, cmName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		bundle = cm.Data[kube.CABundleKey]
		return bundle != ""
	})

	req := opensslCSR(t, id)
	start := time.Now()
	csr := e.createCSR(e.node("node-a"), req, csrSpec{node: "node-a"})
	if !strings.HasPrefix(csr.Name, "ipsec-csr-node-a-") || csr.Spec.Username != nodePrefix+"node-a" {
		t.Fatalf("CSR %s by %q", csr.Name, csr.Spec.Username)
	}
	got := waitCertificate(t, e.node("node-a"), csr.Name, 2*time.Second)
	t.Logf("CSR created to certificate published: %s", time.Since(start).Round(time.Millisecond))

	ap := condition(got, certificatesv1.CertificateApproved)
	if ap == nil || ap.Reason != string(kube.ReasonApproved) || !strings.Contains(ap.Message, "replica-1") ||
		!strings.Contains(ap.Message, `node "node-a"`) || !strings.Contains(ap.Message, id) {
		t.Fatalf("Approved condition %+v: want reason %s and a message naming the replica, the node and the chassis-id",
			ap, kube.ReasonApproved)
	}
	cert := parseCert(t, got.Status.Certificate)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(bundle)) {
		t.Fatal("the ConfigMap's bundle holds no certificate")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the certificate does not chain to the ConfigMap's bundle: %v", err)
	}
	if cert.Subject.CommonName != id || !slices.Equal(cert.DNSNames, []string{id}) {
		t.Fatalf("certificate CN %q SANs %v, want %s and DNS:%s", cert.Subject.CommonName, cert.DNSNames, id, id)
	}
	// The CA builds the subject (same profile as gRPC), CN last in RFC 2253.
	if s := cert.Subject.String(); !strings.HasPrefix(s, "CN="+id+",") || strings.Contains(s, "ovnkubernetes") {
		t.Fatalf("subject %q: want the CA's own subject with the CN first in RFC 2253 form", s)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) ||
		!slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) ||
		len(cert.UnknownExtKeyUsage) != 1 || !cert.UnknownExtKeyUsage[0].Equal(ca.OIDExtKeyUsageIPSecIKE) {
		t.Fatalf("EKU %v %v: want the node profile (server, client auth, ipsecIKE)",
			cert.ExtKeyUsage, cert.UnknownExtKeyUsage)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life < 5*365*24*time.Hour {
		t.Fatalf("lifetime %s, want 5 years", life)
	}

	rec, err := e.store.CertByRequest(ctx, string(csr.UID))
	if err != nil {
		t.Fatalf("stored by the CSR's UID: %v", err)
	}
	if rec.Serial != ca.SerialString(cert.SerialNumber) || rec.Node != "node-a" || rec.IssuedVia != "kube" {
		t.Fatalf("stored %+v, published serial %s", rec, ca.SerialString(cert.SerialNumber))
	}
	var enrolled int
	for _, ev := range e.events("node-a") {
		if ev.Type == store.EventEnrolled && ev.Detail["request_uid"] == string(csr.UID) && ev.Serial == rec.Serial {
			enrolled++
		}
	}
	if enrolled != 1 {
		t.Fatalf("%d audit events for the issue, want 1", enrolled)
	}
	// Counted right after the write the node saw.
	eventually(t, 2*time.Second, "the approval counted", func() bool {
		return counter(t, reg, "ipsecca_kube_csr_decisions_total", map[string]string{"decision": "approved"}) == 1
	})
	eventually(t, 2*time.Second, "the bundle's creation counted", func() bool {
		return counter(t, reg, "ipsecca_kube_ca_bundle_writes_total", map[string]string{"action": "created"}) == 1
	})

	// spec.expirationSeconds is honoured when shorter, never longer.
	t.Run("expirationSeconds", func(t *testing.T) {
		idB := chassisID()
		e.addNode("node-b", idB)
		short := e.createCSR(e.node("node-b"), makeCSR(t, ecKey(t), idB, []string{idB}),
			csrSpec{node: "node-b", expiration: ptr.To[int32](3600)})
		c := parseCert(t, waitCertificate(t, e.node("node-b"), short.Name, 5*time.Second).Status.Certificate)
		if life := c.NotAfter.Sub(c.NotBefore); life != time.Hour {
			t.Fatalf("expirationSeconds 3600: lifetime %s, want 1h", life)
		}
		long := e.createCSR(e.node("node-b"), makeCSR(t, ecKey(t), idB, []string{idB}),
			csrSpec{node: "node-b", expiration: ptr.To[int32](10 * 365 * 24 * 3600)})
		c = parseCert(t, waitCertificate(t, e.node("node-b"), long.Name, 5*time.Second).Status.Certificate)
		if want := c.NotBefore.AddDate(ca.NodeYears, 0, 0); !c.NotAfter.Equal(want) {
			t.Fatalf("expirationSeconds of 10 years: NotAfter %s, want %s (5 years)", c.NotAfter, want)
		}
	})
}

// counter reads a counter (summed over the series matching labels).
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// Every denial reason, each on its own node, with a condition reason a
// machine can match, a message a person can act on, one audit event (none
// for a requester that is not an existing node) and no certificate.
func TestDenials(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	cfg := e.config("replica-1")
	cfg.Metrics = reg
	e.start(cfg, true)

	ids := map[string]string{}
	for _, n := range []string{"node-1", "node-2", "node-4", "node-5", "node-8", "node-9", "node-10", "node-12"} {
		ids[n] = chassisID()
		e.addNode(n, ids[n])
	}
	e.addNode("node-3", "")            // no chassis-id
	e.addNode("node-6", ids["node-5"]) // claims node-5's chassis-id
	e.addNode("node-7", "ovs_node7")   // a chassis-id in ovs-monitor-ipsec's namespace
	e.addNode("node-13", "Not_A_Name") // not a DNS name nor a UUID
	bcCA, _ := asn1.Marshal(struct{ IsCA bool }{true})
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	csrFor := func(n string) []byte { return makeCSR(t, ecKey(t), ids[n], []string{ids[n]}) }

	cases := []struct {
		name, user string
		req        []byte
		spec       csrSpec
		want       kube.Reason
		msg        string // the message names this
	}{
		{"not a node", "admin", csrFor("node-1"), csrSpec{node: "node-0"}, kube.ReasonRequesterNotNode,
			`"admin" is not a node identity`},
		{"no such node", nodePrefix + "ghost", csrFor("node-1"), csrSpec{node: "ghost"}, kube.ReasonNodeNotFound,
			`no such Node`},
		{"label names another node", nodePrefix + "node-1", csrFor("node-1"),
			csrSpec{node: "node-1", label: ptr.To("node-2")}, kube.ReasonLabelNotRequester, `"node-2"`},
		{"usage", nodePrefix + "node-2", csrFor("node-2"),
			csrSpec{node: "node-2",
				usages: []certificatesv1.KeyUsage{certificatesv1.UsageIPsecTunnel, certificatesv1.UsageCodeSigning}},
			kube.ReasonUsageNotAllowed, `"code signing"`},
		{"no chassis-id", nodePrefix + "node-3", csrFor("node-1"), csrSpec{node: "node-3"}, kube.ReasonNodeHasNoChassisID,
			kube.AnnotationChassisID},
		{"another node's chassis-id", nodePrefix + "node-4", csrFor("node-5"), csrSpec{node: "node-4"},
			kube.ReasonCNNotNodeChassisID, ids["node-4"]},
		{"chassis-id held by another node", nodePrefix + "node-6", csrFor("node-5"), csrSpec{node: "node-6"},
			kube.ReasonCNHeldByOtherNode, `"node-5"`},
		{"ovs_ prefix", nodePrefix + "node-7", makeCSR(t, ecKey(t), "ovs_node7", []string{"ovs_node7"}),
			csrSpec{node: "node-7"}, kube.ReasonForbiddenCNPrefix, "ovs_"},
		{"weak key", nodePrefix + "node-8", makeCSR(t, rsa1024, ids["node-8"], []string{ids["node-8"]}),
			csrSpec{node: "node-8"}, kube.ReasonWeakKey, "1024"},
		{"unsupported key", nodePrefix + "node-9", makeCSR(t, edKey, ids["node-9"], nil), csrSpec{node: "node-9"},
			kube.ReasonUnsupportedKey, "Ed25519"},
		{"extra SAN", nodePrefix + "node-10",
			makeCSR(t, ecKey(t), ids["node-10"], []string{ids["node-10"], "evil.example.com"}), csrSpec{node: "node-10"},
			kube.ReasonSANNotAllowed, "evil.example.com"},
		{"CA requested", nodePrefix + "node-12",
			makeCSR(t, ecKey(t), ids["node-12"], nil, pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: bcCA}),
			csrSpec{node: "node-12"}, kube.ReasonCARequested, "CA"},
		{"CN syntax", nodePrefix + "node-13", makeCSR(t, ecKey(t), "Not_A_Name", nil), csrSpec{node: "node-13"},
			kube.ReasonCNInvalid, "not_a_name"}, // named in lower case, as the CA compares it
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = e.createCSR(e.client(c.user), c.req, c.spec).Name
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := e.waitDecided(names[i], 5*time.Second)
			d := condition(got, certificatesv1.CertificateDenied)
			if d == nil || len(got.Status.Certificate) > 0 || condition(got, certificatesv1.CertificateApproved) != nil {
				t.Fatalf("want Denied and no certificate, got %+v", got.Status)
			}
			if d.Reason != string(c.want) || !strings.Contains(d.Message, c.msg) {
				t.Fatalf("Denied %s: %q; want reason %s and a message naming %q", d.Reason, d.Message, c.want, c.msg)
			}
			if node := kube.RequesterNode(c.user, nodePrefix); node != "" && len(e.nodeCerts(node)) > 0 {
				t.Fatalf("node %s has a stored certificate", node)
			}
			// The signer audits its own denials right after writing them.
			denials := func() int {
				evs, _, err := e.store.ListEvents(context.Background(), store.EventFilter{Type: store.EventDenied, Limit: 1000})
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for _, ev := range evs {
					if ev.Actor == c.user {
						n++
					}
				}
				return n
			}
			// Except for requesters that are not existing nodes: anyone
			// may create CSRs, so those are counted, not audited one by one.
			want := 1
			if c.want == kube.ReasonRequesterNotNode || c.want == kube.ReasonNodeNotFound {
				want = 0
			} else {
				eventually(t, 2*time.Second, "the denial's audit event", func() bool { return denials() > 0 })
			}
			if n := denials(); n != want {
				t.Fatalf("%d denial audit events by %s, want %d", n, c.user, want)
			}
		})
	}
	eventually(t, 2*time.Second, fmt.Sprintf("%d denials counted", len(cases)), func() bool {
		return counter(t, reg, "ipsecca_kube_csr_decisions_total",
			map[string]string{"decision": "denied"}) == float64(len(cases))
	})
}

// approveAsAdmin approves a CSR as a cluster admin would (kubectl certificate approve).
func (e *env) approveAsAdmin(name string) {
	e.t.Helper()
	c := e.getCSR(name)
	c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "KubectlApprove",
		Message: "approved by an admin"})
	csrs := e.admin.CertificatesV1().CertificateSigningRequests()
	if _, err := csrs.UpdateApproval(context.Background(), name, c, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// A CSR an admin approved that fails the policy gets Failed and no
// certificate; one that passes is signed under the admin's approval.
func TestAdminApprovedCSRs(t *testing.T) {
	e := newEnv(t)
	idA, idB := chassisID(), chassisID()
	e.addNode("node-a", idA)
	e.addNode("node-b", idB)
	bad := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), idB, []string{idB}), csrSpec{node: "node-a"})
	good := e.createCSR(e.node("node-b"), makeCSR(t, ecKey(t), idB, []string{idB}), csrSpec{node: "node-b"})
	e.approveAsAdmin(bad.Name)
	e.approveAsAdmin(good.Name)
	e.start(e.config("replica-1"), true)

	got := e.waitDecided(bad.Name, 5*time.Second)
	f := condition(got, certificatesv1.CertificateFailed)
	if f == nil || len(got.Status.Certificate) > 0 {
		t.Fatalf("want Failed and no certificate, got %+v", got.Status)
	}
	if f.Reason != string(kube.ReasonCNNotNodeChassisID) || !strings.Contains(f.Message, "approved by someone else") ||
		!strings.Contains(f.Message, idA) {
		t.Fatalf("Failed %s: %q", f.Reason, f.Message)
	}
	if n := len(e.nodeCerts("node-a")); n != 0 {
		t.Fatalf("node-a has %d stored certificates, want 0", n)
	}
	failed := func() int {
		n := 0
		for _, ev := range e.events("node-a") {
			if ev.Type == kube.EventCSRFailed && ev.Detail["csr"] == bad.Name {
				n++
			}
		}
		return n
	}
	eventually(t, 2*time.Second, "the csr.failed audit event", func() bool { return failed() > 0 })
	if n := failed(); n != 1 {
		t.Fatalf("%d csr.failed audit events, want 1", n)
	}

	got = waitCertificate(t, e.node("node-b"), good.Name, 5*time.Second)
	if ap := condition(got, certificatesv1.CertificateApproved); ap == nil || ap.Reason != "KubectlApprove" {
		t.Fatalf("the admin's approval was replaced: %+v", ap)
	}
}

// Killed between storing the certificate and publishing it, a signer
// that comes back (or any other replica) publishes the same certificate:
// exactly one is issued.
func TestCrashBetweenStoreAndPublish(t *testing.T) {
	e := newEnv(t)
	id := chassisID()
	e.addNode("node-a", id)

	var once sync.Once
	stored := make(chan struct{})
	cfg := e.config("doomed")
	cfg.Hook = func(ctx context.Context, step string) error {
		if step != kube.StepStored {
			return nil
		}
		once.Do(func() { close(stored) })
		<-ctx.Done() // dead: nothing more happens until the process is gone
		return ctx.Err()
	}
	doomed := e.start(cfg, true)
	csr := e.createCSR(e.node("node-a"), opensslCSR(t, id), csrSpec{node: "node-a"})
	select {
	case <-stored:
	case <-time.After(5 * time.Second):
		t.Fatal("the signer never stored a certificate")
	}
	doomed.Stop()
	rec, err := e.store.CertByRequest(context.Background(), string(csr.UID))
	if err != nil {
		t.Fatalf("the certificate was not stored before the crash: %v", err)
	}
	if c := e.getCSR(csr.Name); len(c.Status.Certificate) > 0 || len(c.Status.Conditions) > 0 {
		t.Fatalf("the CSR changed after the crash: %+v", c.Status)
	}

	e.start(e.config("restarted"), true)
	got := waitCertificate(t, e.node("node-a"), csr.Name, 10*time.Second)
	cert := parseCert(t, got.Status.Certificate)
	if serial := ca.SerialString(cert.SerialNumber); serial != rec.Serial {
		t.Fatalf("published serial %s, stored %s: signed twice", serial, rec.Serial)
	}
	if ap := condition(got, certificatesv1.CertificateApproved); ap == nil || !strings.Contains(ap.Message, rec.Serial) {
		t.Fatalf("Approved condition %+v should name the stored serial", ap)
	}
	if certs := e.nodeCerts("node-a"); len(certs) != 1 {
		t.Fatalf("%d certificates stored for node-a, want exactly 1", len(certs))
	}
}

// Two replicas: one leads and signs, the other waits; every CSR is signed
// once; when the leader goes, the other takes over.
func TestTwoReplicas(t *testing.T) {
	e := newEnv(t)
	ids := map[string]string{}
	for i := range 11 {
		n := fmt.Sprintf("node-%d", i)
		ids[n] = chassisID()
		e.addNode(n, ids[n])
	}
	r1 := e.start(e.config("replica-1"), false)
	r2 := e.start(e.config("replica-2"), false)
	eventually(t, 20*time.Second, "a leader", func() bool { return r1.Leading() || r2.Leading() })
	leader, follower := r1, r2
	if r2.Leading() {
		leader, follower = r2, r1
	}
	time.Sleep(time.Second)
	if follower.Leading() {
		t.Fatal("both replicas lead")
	}

	var wg sync.WaitGroup
	names := make([]string, 10)
	for i := range 10 {
		wg.Go(func() {
			n := fmt.Sprintf("node-%d", i)
			names[i] = e.createCSR(e.node(n), makeCSR(t, ecKey(t), ids[n], []string{ids[n]}), csrSpec{node: n}).Name
		})
	}
	wg.Wait()
	for i, name := range names {
		n := fmt.Sprintf("node-%d", i)
		got := waitCertificate(t, e.node(n), name, 10*time.Second)
		if ap := condition(got, certificatesv1.CertificateApproved); ap == nil ||
			!strings.Contains(ap.Message, leader.Identity()) {
			t.Fatalf("CSR %s approved by %+v, want the leader %s", name, ap, leader.Identity())
		}
		rec, err := e.store.CertByRequest(context.Background(), string(got.UID))
		if err != nil || rec.Serial != ca.SerialString(parseCert(t, got.Status.Certificate).SerialNumber) {
			t.Fatalf("CSR %s: stored %v (%v) differs from the published one", name, rec, err)
		}
		if certs := e.nodeCerts(n); len(certs) != 1 {
			t.Fatalf("%d certificates for %s, want 1", len(certs), n)
		}
	}

	leader.Stop()
	eventually(t, 15*time.Second, "the follower takes over", follower.Leading)
	csr := e.createCSR(e.node("node-10"), makeCSR(t, ecKey(t), ids["node-10"], []string{ids["node-10"]}),
		csrSpec{node: "node-10"})
	got := waitCertificate(t, e.node("node-10"), csr.Name, 5*time.Second)
	if ap := condition(got, certificatesv1.CertificateApproved); ap == nil ||
		!strings.Contains(ap.Message, follower.Identity()) {
		t.Fatalf("after the handover, approved by %+v, want %s", ap, follower.Identity())
	}
	// The new leader saw every CSR that already carries a certificate and
	// signed none of them again.
	for i := range 10 {
		if n := len(e.nodeCerts(fmt.Sprintf("node-%d", i))); n != 1 {
			t.Fatalf("node-%d has %d certificates after the handover, want 1", i, n)
		}
	}
}

// In Disabled and External mode CSRs are left alone (for another signer);
// a Full signer started later picks up the pending ones, signs only each
// node's newest and denies the older as superseded.
func TestModesRestartAndSupersede(t *testing.T) {
	e := newEnv(t)
	idA, idB := chassisID(), chassisID()
	e.addNode("node-a", idA)
	e.addNode("node-b", idB)
	for _, m := range []kube.Mode{kube.ModeDisabled, kube.ModeExternal} {
		cfg := e.config("replica-" + strings.ToLower(string(m)))
		cfg.Mode = m
		e.start(cfg, false)
	}
	older := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), idA, []string{idA}), csrSpec{node: "node-a"})
	time.Sleep(1100 * time.Millisecond) // creation timestamps have a one-second resolution
	newer := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), idA, []string{idA}), csrSpec{node: "node-a"})
	other := e.createCSR(e.node("node-b"), makeCSR(t, ecKey(t), idB, []string{idB}), csrSpec{node: "node-b"})
	time.Sleep(time.Second)
	for _, n := range []string{older.Name, newer.Name, other.Name} {
		if c := e.getCSR(n); len(c.Status.Conditions) > 0 || len(c.Status.Certificate) > 0 {
			t.Fatalf("CSR %s touched outside Full mode: %+v", n, c.Status)
		}
	}
	cms := e.admin.CoreV1().ConfigMaps(cmNS)
	if _, err := cms.Get(context.Background(), cmName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the bundle ConfigMap was published outside Full mode (%v)", err)
	}

	e.start(e.config("replica-full"), true)
	waitCertificate(t, e.node("node-a"), newer.Name, 5*time.Second)
	waitCertificate(t, e.node("node-b"), other.Name, 5*time.Second)
	got := e.waitDecided(older.Name, 5*time.Second)
	d := condition(got, certificatesv1.CertificateDenied)
	if d == nil || d.Reason != string(kube.ReasonSuperseded) || !strings.Contains(d.Message, newer.Name) ||
		len(got.Status.Certificate) > 0 {
		t.Fatalf("older CSR: %+v; want Denied %s naming %s", got.Status, kube.ReasonSuperseded, newer.Name)
	}
	if certs := e.nodeCerts("node-a"); len(certs) != 1 {
		t.Fatalf("%d certificates for node-a, want 1", len(certs))
	}
}

// A flood: many nodes at once and one node asking over and over. Every
// CSR gets an answer (nothing dropped), each node's newest is signed, and
// a certificate is stored only for a CSR that carries it.
func TestFlood(t *testing.T) {
	e := newEnv(t)
	ids := map[string]string{}
	for i := range 24 {
		n := fmt.Sprintf("node-%d", i)
		ids[n] = chassisID()
		e.addNode(n, ids[n])
	}
	cfg := e.config("replica-1")
	cfg.PerNodeBurst, cfg.PerNodeRate = 2, 2 // the per-node limit bites
	e.start(cfg, true)

	type made struct{ node, name string }
	var mu sync.Mutex
	var all []made
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 24 {
		n := fmt.Sprintf("node-%d", i)
		wg.Go(func() {
			k := 1
			if i == 0 {
				k = 12 // one node floods
			}
			for range k {
				c := e.createCSR(e.node(n), makeCSR(t, ecKey(t), ids[n], []string{ids[n]}), csrSpec{node: n})
				mu.Lock()
				all = append(all, made{n, c.Name})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	issued := map[string]int{}
	newest := map[string]*certificatesv1.CertificateSigningRequest{}
	for _, m := range all {
		got := e.waitDecided(m.name, 20*time.Second)
		switch {
		case len(got.Status.Certificate) > 0:
			issued[m.node]++
		case condition(got, certificatesv1.CertificateDenied) != nil &&
			condition(got, certificatesv1.CertificateDenied).Reason == string(kube.ReasonSuperseded):
		default:
			t.Fatalf("CSR %s of %s: %+v", m.name, m.node, got.Status)
		}
		if cur := newest[m.node]; cur == nil || got.CreationTimestamp.After(cur.CreationTimestamp.Time) ||
			(got.CreationTimestamp.Equal(&cur.CreationTimestamp) && got.Name > cur.Name) {
			newest[m.node] = got
		}
	}
	t.Logf("%d CSRs from 24 nodes answered in %s", len(all), time.Since(start).Round(time.Millisecond))
	for n, c := range newest {
		if len(c.Status.Certificate) == 0 {
			t.Fatalf("the newest CSR of %s (%s) has no certificate: %+v", n, c.Name, c.Status)
		}
		if stored := len(e.nodeCerts(n)); stored != issued[n] {
			t.Fatalf("%s: %d certificates stored, %d published", n, stored, issued[n])
		}
	}
}

// The CA bundle ConfigMap is created when absent, restored when edited or
// deleted, and carries both roots, newest first, after a CA renewal.
func TestCABundleConfigMap(t *testing.T) {
	e := newEnv(t)
	id := chassisID()
	e.addNode("node-a", id)
	s := e.start(e.config("replica-1"), true)
	ctx := context.Background()
	cms := e.admin.CoreV1().ConfigMaps(cmNS)
	root1 := e.auth.Root()
	bundleIs := func(want []byte) func() bool {
		return func() bool {
			cm, err := cms.Get(ctx, cmName, metav1.GetOptions{})
			return err == nil && cm.Data[kube.CABundleKey] == string(want)
		}
	}
	eventually(t, 5*time.Second, "the ConfigMap holds the root", bundleIs(root1.BundlePEM))

	csr := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), id, []string{id}), csrSpec{node: "node-a"})
	leaf := parseCert(t, waitCertificate(t, e.node("node-a"), csr.Name, 5*time.Second).Status.Certificate)

	cm, err := cms.Get(ctx, cmName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[kube.CABundleKey] = "tampered"
	cm.Data["other"] = "kept"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "the edited ConfigMap restored", bundleIs(root1.BundlePEM))
	if cm, _ := cms.Get(ctx, cmName, metav1.GetOptions{}); cm.Data["other"] != "kept" {
		t.Fatal("restoring dropped another key")
	}
	if err := cms.Delete(ctx, cmName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "the deleted ConfigMap recreated", bundleIs(root1.BundlePEM))

	root2, err := e.auth.RenewRoot(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	s.CABundleChanged(root2.BundlePEM)
	eventually(t, 3*time.Second, "the renewed bundle published", bundleIs(root2.BundlePEM))
	cm, _ = cms.Get(ctx, cmName, metav1.GetOptions{})
	roots, err := pemutil.ParseCertificates([]byte(cm.Data[kube.CABundleKey]), pemutil.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(roots) != 2 || !roots[0].Equal(root2.Cert) || !roots[1].Equal(root1.Cert) {
		t.Fatalf("bundle holds %d roots; want the new root then the old one", len(roots))
	}
	fp := func(c *x509.Certificate) string { s := sha256.Sum256(c.Raw); return hex.EncodeToString(s[:]) }
	if got, want := cm.Annotations[kube.AnnotationFingerprints], fp(roots[0])+","+fp(roots[1]); got != want {
		t.Fatalf("fingerprint annotation %q, want %q", got, want)
	}
	for i, r := range roots {
		pool := x509.NewCertPool()
		pool.AddCert(r)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("the node certificate does not verify against root %d of the bundle: %v", i, err)
		}
	}
}

// Answered CSRs are deleted an hour after the answer, unanswered ones a
// day after creation.
func TestGarbageCollection(t *testing.T) {
	e := newEnv(t)
	id := chassisID()
	e.addNode("node-a", id)
	e.addNode("node-3", "")
	cfg := e.config("replica-1")
	cfg.Resync = 200 * time.Millisecond
	cfg.ChassisIDWait = 48 * time.Hour // node-3's CSR stays unanswered
	e.start(cfg, true)

	issued := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), id, []string{id}), csrSpec{node: "node-a"})
	denied := e.createCSR(e.admin, makeCSR(t, ecKey(t), id, []string{id}), csrSpec{node: "node-x"})
	pending := e.createCSR(e.node("node-3"), makeCSR(t, ecKey(t), id, []string{id}), csrSpec{node: "node-3"})
	waitCertificate(t, e.node("node-a"), issued.Name, 5*time.Second)
	e.waitDecided(denied.Name, 5*time.Second)

	exists := func(name string) bool {
		_, err := e.admin.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{})
		return err == nil
	}
	e.clock.Set(50 * time.Minute)
	time.Sleep(time.Second)
	if !exists(issued.Name) || !exists(denied.Name) || !exists(pending.Name) {
		t.Fatal("a CSR was deleted before its time")
	}
	e.clock.Set(61 * time.Minute)
	eventually(t, 5*time.Second, "answered CSRs deleted after an hour",
		func() bool { return !exists(issued.Name) && !exists(denied.Name) })
	if !exists(pending.Name) {
		t.Fatal("the unanswered CSR was deleted after an hour")
	}
	e.clock.Set(24*time.Hour + time.Minute)
	eventually(t, 5*time.Second, "the unanswered CSR deleted after a day", func() bool { return !exists(pending.Name) })
}
