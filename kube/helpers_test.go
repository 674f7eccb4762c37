package kube_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/ipsecca/ipsecca/ca"
	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
	"github.com/ipsecca/ipsecca/kube/kubetest"
	"github.com/ipsecca/ipsecca/store"
	"github.com/ipsecca/ipsecca/store/bolt"
)

const (
	nodeGroup  = "system:ovn-nodes"
	nodePrefix = "system:ovn-node:"
	cmNS       = "openshift-ovn-kubernetes"
	cmName     = "signer-ca"
)

// env is one real API server with ipsecca's manifests applied, a CA over
// a real bolt store, and clients for the admin, the nodes and the
// signer's own service account.
type env struct {
	t       *testing.T
	srv     *kubetest.Server
	admin   kubernetes.Interface
	signer  kubernetes.Interface // ipsecca/ipsecca, under the printed RBAC only
	store   *bolt.Store
	auth    *ca.Authority
	clock   *offsetClock
	mu      sync.Mutex
	clients map[string]kubernetes.Interface
}

// nodeNames are the static-token node identities every env has.
var nodeNames = func() []string {
	var n []string
	for i := range 24 {
		n = append(n, fmt.Sprintf("node-%d", i))
	}
	return append(n, "node-a", "node-b", "ghost")
}()

func newEnv(t *testing.T) *env {
	t.Helper()
	var users []kubetest.User
	for _, n := range nodeNames {
		users = append(users, kubetest.User{Name: nodePrefix + n, Groups: []string{nodeGroup}})
	}
	srv := kubetest.Start(t, kubetest.Options{Users: users})
	e := &env{t: t, srv: srv, admin: kubetest.Client(t, srv.Admin), clock: &offsetClock{},
		clients: map[string]kubernetes.Interface{}}
	ctx := context.Background()
	// The bundle's namespace is the cluster's (OpenShift's network operator's).
	if _, err := e.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cmNS}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.ApplyManifests(t, srv, deploy.ManifestOptions{})
	e.signer = kubetest.Client(t, srv.ServiceAccountConfig(t, kube.DefaultNamespace, deploy.NameCA))
	e.store, e.auth = newCA(t, ca.ClockFunc(time.Now))
	return e
}

func newCA(t *testing.T, clock ca.Clock) (*bolt.Store, *ca.Authority) {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	root, _, err := ca.Bootstrap(context.Background(), st, ca.RootConfig{}, clock)
	if err != nil {
		t.Fatal(err)
	}
	return st, ca.New(st, root, ca.Config{Clock: clock, Rand: rand.Reader})
}

// offsetClock is the wall clock moved forward by an offset.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time                { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) Advance(d time.Duration)       { c.off.Add(int64(d)) }
func (c *offsetClock) Set(d time.Duration)           { c.off.Store(int64(d)) }
func (c *offsetClock) Offset() time.Duration         { return time.Duration(c.off.Load()) }
func (e *env) node(name string) kubernetes.Interface { return e.client(nodePrefix + name) }

func (e *env) client(user string) kubernetes.Interface {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.clients[user]; ok {
		return c
	}
	c := kubetest.Client(e.t, e.srv.ConfigFor(user))
	e.clients[user] = c
	return c
}

// config is a signer configuration under the printed RBAC, with quick
// leader-election timings.
func (e *env) config(identity string) kube.Config {
	return kube.Config{
		Client:    e.signer,
		Authority: e.auth,
		Store:     e.store,
		Clock:     e.clock,
		Logger:    testLogger(e.t, identity),
		LeaderElection: kube.LeaderElection{Namespace: kube.DefaultNamespace, Identity: identity,
			LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 300 * time.Millisecond},
		ChassisIDWait: -1,
		PerNodeBurst:  20,
	}
}

// runningSigner is a Signer running in the background.
type runningSigner struct {
	*kube.Signer
	Stop func()
}

// start runs a signer until Stop (or the end of the test) and waits until
// it leads when wantLead.
func (e *env) start(cfg kube.Config, wantLead bool) *runningSigner {
	e.t.Helper()
	s, err := kube.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("signer %s: %v", s.Identity(), err)
		}
	})
	e.t.Cleanup(stop)
	if wantLead {
		eventually(e.t, 20*time.Second, "signer "+s.Identity()+" leads", func() bool { return s.Leading() })
	}
	return &runningSigner{Signer: s, Stop: stop}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// addNode creates a Node, with the chassis-id annotation when id is set.
func (e *env) addNode(name, id string) {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if id != "" {
		n.Annotations = map[string]string{kube.AnnotationChassisID: id}
	}
	if _, err := e.admin.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// csrSpec is what a node puts in its CSR object.
type csrSpec struct {
	node       string // for generateName and the label ("" for no label)
	label      *string
	usages     []certificatesv1.KeyUsage
	signerName string
	expiration *int32
}

// createCSR creates the CSR object as OVN-Kubernetes' node script does.
func (e *env) createCSR(c kubernetes.Interface, req []byte, s csrSpec) *certificatesv1.CertificateSigningRequest {
	e.t.Helper()
	if s.usages == nil {
		s.usages = []certificatesv1.KeyUsage{certificatesv1.UsageIPsecTunnel}
	}
	if s.signerName == "" {
		s.signerName = kube.DefaultSignerName
	}
	obj := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "ipsec-csr-" + s.node + "-", Labels: map[string]string{}},
		Spec: certificatesv1.CertificateSigningRequestSpec{Request: req, SignerName: s.signerName, Usages: s.usages,
			ExpirationSeconds: s.expiration},
	}
	switch {
	case s.label != nil:
		obj.Labels[kube.LabelIPsecCSR] = *s.label
	case s.node != "":
		obj.Labels[kube.LabelIPsecCSR] = s.node
	}
	out, err := c.CertificatesV1().CertificateSigningRequests().Create(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("create CSR: %v", err)
	}
	return out
}

func (e *env) getCSR(name string) *certificatesv1.CertificateSigningRequest {
	e.t.Helper()
	c, err := e.admin.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// waitDecided waits until the CSR has a certificate or a Denied/Failed condition.
func (e *env) waitDecided(name string, timeout time.Duration) *certificatesv1.CertificateSigningRequest {
	e.t.Helper()
	var c *certificatesv1.CertificateSigningRequest
	eventually(e.t, timeout, "a decision on CSR "+name, func() bool {
		c = e.getCSR(name)
		return len(c.Status.Certificate) > 0 || condition(c, certificatesv1.CertificateDenied) != nil ||
			condition(c, certificatesv1.CertificateFailed) != nil
	})
	return c
}

// waitCertificate watches the CSR as its node (the node's RBAC: get and
// watch its CSR) until it carries a certificate.
func waitCertificate(
	t *testing.T, c kubernetes.Interface, name string, timeout time.Duration,
) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	csrs := c.CertificatesV1().CertificateSigningRequests()
	for {
		cur, err := csrs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get CSR %s as its node: %v", name, err)
		}
		if len(cur.Status.Certificate) > 0 {
			return cur
		}
		if d := condition(cur, certificatesv1.CertificateDenied); d != nil {
			t.Fatalf("CSR %s denied: %s: %s", name, d.Reason, d.Message)
		}
		sel := fields.OneTermEqualSelector("metadata.name", name).String()
		w, err := csrs.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: cur.ResourceVersion})
		if err != nil {
			t.Fatalf("watch CSR %s as its node: %v", name, err)
		}
		select {
		case <-w.ResultChan():
		case <-ctx.Done():
			w.Stop()
			t.Fatalf("no certificate on CSR %s within %s", name, timeout)
		}
		w.Stop()
	}
}

func condition(
	c *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType,
) *certificatesv1.CertificateSigningRequestCondition {
	for i := range c.Status.Conditions {
		if c.Status.Conditions[i].Type == t {
			return &c.Status.Conditions[i]
		}
	}
	return nil
}

// makeCSR is a PEM CSR for key with subject CN (and OVN's O/OU/C) and the
// given DNS SANs.
func makeCSR(t *testing.T, key crypto.Signer, cn string, dns []string, exts ...pkix.Extension) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"ovnkubernetes"},
			OrganizationalUnit: []string{"kind"}, CommonName: cn},
		DNSNames:        dns,
		ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func ecKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// opensslCSR makes a key and CSR exactly as OVN-Kubernetes' ipsec script
// does: openssl genrsa 2048, subject /C=US/O=ovnkubernetes/OU=kind/CN=<id>, SAN DNS:<id>.
func opensslCSR(t *testing.T, id string) []byte {
	t.Helper()
	dir := t.TempDir()
	key, csr := filepath.Join(dir, "key.pem"), filepath.Join(dir, "req.pem")
	for _, args := range [][]string{
		{"genrsa", "-out", key, "2048"},
		{"req", "-new", "-key", key, "-out", csr, "-subj",
			"/C=US/O=ovnkubernetes/OU=kind/CN=" + id, "-addext", "subjectAltName = DNS:" + id},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", args[0], err, out)
		}
	}
	b, err := os.ReadFile(csr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		t.Fatalf("no PEM certificate in %q", pemBytes)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nodeCerts lists the stored certificates of node.
func (e *env) nodeCerts(node string) []*store.Cert {
	e.t.Helper()
	certs, _, err := e.store.ListCerts(context.Background(),
		store.CertFilter{Node: node, Kind: store.KindNode, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return certs
}

// events lists the audit events of node.
func (e *env) events(node string) []*store.Event {
	e.t.Helper()
	evs, _, err := e.store.ListEvents(context.Background(), store.EventFilter{Node: node, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// testLogger logs through t.Log, prefixed with the signer's identity.
func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("replica", name)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
