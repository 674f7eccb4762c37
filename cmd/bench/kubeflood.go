package main

// The Kubernetes CSR flood (issue #23 goal 4): N nodes' CSRs created at
// once, as OpenShift's node script makes them, against a real
// kube-apiserver, signed by the real `ipsecca serve --kube`; compared in
// the same run with the API server's own ceiling for that work (the same
// creates, approvals and status writes from one client with no signer
// logic).

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	certclient "k8s.io/client-go/kubernetes/typed/certificates/v1"
	"k8s.io/client-go/rest"

	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
	"github.com/ipsecca/ipsecca/kube/kubetest"
)

var (
	kubeFloodNodes   int
	kubeFloodConc    int
	kubeFloodWait    time.Duration
	kubeFloodProfile string
)

func init() {
	flag.IntVar(&kubeFloodNodes, "kube-nodes", 0, "nodes (and CSRs) in the kube flood (default 5000, 500 with --quick)")
	flag.IntVar(&kubeFloodConc, "kube-concurrency", 64, "CSR creates in flight in the kube flood and its ceiling")
	flag.DurationVar(&kubeFloodWait, "kube-wait", 0,
		"how long the kube flood waits for every certificate (default 10m, 60s with --quick)")
	flag.StringVar(&kubeFloodProfile, "kube-cpuprofile", "",
		"write serve --kube's CPU profile during the kube flood here (go tool pprof)")
	register("kube", kubeFlood)
}

// kfNode is one node of the flood: its Node's name and chassis-id, its
// identity's client and its CSR.
type kfNode struct {
	name, chassis string
	csr           []byte
	client        certclient.CertificateSigningRequestInterface // as system:ovn-node:<name>
}

func kubeFlood(c config, _ *baseline) ([]row, []goal) {
	n, conc, wait := kubeFloodNodes, kubeFloodConc, kubeFloodWait
	if n <= 0 {
		n = 5000
		if c.quick {
			n = 500
		}
	}
	if wait <= 0 {
		wait = 10 * time.Minute
		if c.quick {
			wait = 60 * time.Second
		}
	}
	ctx := context.Background()
	srv, err := kubetest.Run(kubetest.Options{})
	if err != nil {
		fatal("kube: %v", err)
	}
	defer srv.Stop()
	admin := kfClientset(srv.Admin)
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: "openshift-ovn-kubernetes"}}, metav1.CreateOptions{}); err != nil {
		fatal("kube: %v", err)
	}
	objs, err := deploy.Manifests(deploy.ManifestOptions{})
	if err != nil {
		fatal("kube: %v", err)
	}
	if err := kubetest.CreateObjects(ctx, srv, objs); err != nil {
		fatal("kube: %v", err)
	}
	signerCfg, err := srv.ServiceAccount(ctx, kube.DefaultNamespace, deploy.NameCA)
	if err != nil {
		fatal("kube: %v", err)
	}

	say("kube: %d Nodes, %d CSRs (%d in flight)", n, n, conc)
	nodes := kfNodes(srv.Admin, n)
	kfRun(conc, n, func(i int) error {
		_, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodes[i].name,
			Annotations: map[string]string{kube.AnnotationChassisID: nodes[i].chassis}}}, metav1.CreateOptions{})
		return err
	})

	// The ceiling: the same CSRs created by the same identities, approved
	// and given a certificate by the signer's service account, from one
	// client with no signer logic between the calls; then deleted.
	kubePIDs := []int{srv.PID("kube-apiserver"), srv.PID("etcd")}
	ceil := kfCeiling(ctx, admin, kfClientset(signerCfg), nodes, conc, kubePIDs)
	say("kube: ceiling %.0f CSRs/s (create+approve+status)", ceil.Rate)
	if err := admin.CertificatesV1().CertificateSigningRequests().DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{}); err != nil {
		fatal("kube: delete the ceiling's CSRs: %v", err)
	}

	kc, err := srv.WriteKubeconfig(signerCfg)
	if err != nil {
		fatal("kube: %v", err)
	}
	ca := startServer(c, "", "--kube", "--kubeconfig", kc)
	defer ca.stop()
	kfAwaitLeader(ctx, admin)
	flood := kfFlood(ctx, ca, admin, nodes, conc, wait, kubePIDs)
	mem := kfMemory(ca.cmd.Process.Pid)
	rows := []row{ceil, flood, {
		Name:   fmt.Sprintf("kube: serve --kube memory with %d Nodes and %d CSRs in its informers", n, n),
		Value:  fmt.Sprintf("VmHWM %.0f MiB, VmRSS %.0f MiB", mem["VmHWM"], mem["VmRSS"]),
		RSSMiB: mem["VmHWM"],
	}}
	return rows, []goal{{ID: "4a", Name: fmt.Sprintf("kube flood / apiserver ceiling, %d CSRs, %d in flight", n, conc),
		Measured: flood.Rate / ceil.Rate, Target: 0.7,
		Detail: fmt.Sprintf("%.0f/s vs %.0f/s", flood.Rate, ceil.Rate)}}
}

// kfClientset is a clientset without client-side rate limits: the
// benchmark's clients must not be what limits it.
func kfClientset(cfg *rest.Config) kubernetes.Interface {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	return kubernetes.NewForConfigOrDie(cfg)
}

// kfNodes makes n nodes: names, chassis-ids, CSRs as OVN-Kubernetes' node
// script makes them (subject /C=US/O=ovnkubernetes/OU=kind/CN=<chassis-id>,
// SAN DNS:<chassis-id>; over a pool of 64 P-256 keys, as key generation is
// not measured), and a client impersonating each node's identity.
func kfNodes(adminCfg *rest.Config, n int) []*kfNode {
	keys := make([]crypto.Signer, 64)
	for i := range keys {
		keys[i], _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	out := make([]*kfNode, n)
	kfRun(8, n, func(i int) error {
		var b [16]byte
		rand.Read(b[:])
		id := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"ovnkubernetes"},
				OrganizationalUnit: []string{"kind"}, CommonName: id},
			DNSNames: []string{id},
		}, keys[i%len(keys)])
		if err != nil {
			return err
		}
		name := fmt.Sprintf("node-%05d", i)
		cfg := rest.CopyConfig(adminCfg)
		cfg.QPS, cfg.Burst = -1, 0
		// Impersonation by the admin: the API server records the node's
		// identity as the requester, as a per-node client certificate would.
		cfg.Impersonate = rest.ImpersonationConfig{UserName: kube.DefaultRequesterPrefix + name,
			Groups: []string{kube.DefaultNodeGroup, "system:authenticated"}}
		cl, err := certclient.NewForConfig(cfg)
		if err != nil {
			return err
		}
		out[i] = &kfNode{name: name, chassis: id, client: cl.CertificateSigningRequests(),
			csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})}
		return nil
	})
	return out
}

// object is the node's CSR object as OVN-Kubernetes' node script makes it.
func (nd *kfNode) object() *certificatesv1.CertificateSigningRequest {
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "ipsec-csr-" + nd.name + "-",
			Labels: map[string]string{kube.LabelIPsecCSR: nd.name}},
		Spec: certificatesv1.CertificateSigningRequestSpec{Request: nd.csr, SignerName: kube.DefaultSignerName,
			Usages: []certificatesv1.KeyUsage{certificatesv1.UsageIPsecTunnel}},
	}
}

// kfRun calls f(0..n-1) from conc goroutines and stops the run on an error.
func kfRun(conc, n int, f func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					fatal("kube: %v", err)
				}
			}
		})
	}
	wg.Wait()
}

// kfCeiling is the flood without the signer: conc creates in flight as the
// nodes (as in the flood) and, pipelined behind them, conc approvals and
// status writes as the signer's service account, with no signer logic
// between the calls. The flood has conc creates and the signer's workers
// in flight, so this is at least its concurrency. Latency: from the
// create's return to the status write's.
func kfCeiling(ctx context.Context, admin, signer kubernetes.Interface, nodes []*kfNode, conc int,
	pids []int) row {
	certPEM := kfDummyCert()
	w := kfWatchSigned(ctx, admin, nodes)
	defer w.stop()
	csrs := signer.CertificatesV1().CertificateSigningRequests()
	lat := make([]time.Duration, len(nodes))
	type made struct {
		i  int
		at time.Time
		c  *certificatesv1.CertificateSigningRequest
	}
	created := make(chan made, len(nodes))
	cpu0 := cpuSeconds(pids)
	start := time.Now()
	var writers sync.WaitGroup
	for range conc {
		writers.Go(func() {
			for m := range created {
				c := m.c
				now := metav1.Now()
				c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
					Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "Bench",
					Message: "ceiling", LastUpdateTime: now, LastTransitionTime: now})
				c, err := csrs.UpdateApproval(ctx, c.Name, c, metav1.UpdateOptions{})
				if err != nil {
					fatal("kube: ceiling: %v", err)
				}
				c.Status.Certificate = certPEM
				if _, err = csrs.UpdateStatus(ctx, c, metav1.UpdateOptions{}); err != nil {
					fatal("kube: ceiling: %v", err)
				}
				lat[m.i] = time.Since(m.at)
			}
		})
	}
	kfRun(conc, len(nodes), func(i int) error {
		c, err := nodes[i].client.Create(ctx, nodes[i].object(), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		created <- made{i, time.Now(), c}
		return nil
	})
	close(created)
	writers.Wait()
	select { // the watch sees the last certificates
	case <-w.all:
	case <-time.After(time.Minute):
		fatal("kube: the ceiling's watch did not see every certificate")
	}
	el := time.Since(start)
	cpu1 := cpuSeconds(pids)
	p50, p99 := kfPercentiles(lat)
	return row{Name: fmt.Sprintf("kube: apiserver ceiling, %d CSRs created, approved, given a certificate, "+
		"%d+%d in flight", len(nodes), conc, conc), Rate: float64(len(nodes)) / el.Seconds(), P50: p50, P99: p99,
		Value: fmt.Sprintf("%.1f s; apiserver %.0f µs, etcd %.0f µs CPU/CSR", el.Seconds(),
			1e6*(cpu1[0]-cpu0[0])/float64(len(nodes)), 1e6*(cpu1[1]-cpu0[1])/float64(len(nodes))),
		Comment: "creates impersonate each node; approval and status as the signer's service account; " +
			"the same watch as the flood's runs; latency from the create's return to the status write's"}
}

const kfCeilingCN = "ceiling"

// kfDummyCert is a self-signed certificate for the ceiling's status
// writes (the API server checks that it is PEM certificates).
func kfDummyCert() []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: kfCeilingCN},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		fatal("kube: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// kfAwaitLeader waits until the signer leads: it publishes the CA bundle
// ConfigMap once its caches have synced.
func kfAwaitLeader(ctx context.Context, admin kubernetes.Interface) {
	ns, name, _ := kube.SplitNamespacedName(kube.DefaultCABundleConfigMap)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			fatal("kube: the signer did not publish %s: %v", kube.DefaultCABundleConfigMap, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kfWatch records when each CSR of the signer name is first seen Approved
// with a certificate, as a watch (a node waiting for its certificate) sees
// it. It runs in the ceiling too: it is part of the measurement's load.
type kfWatch struct {
	mu     sync.Mutex
	signed map[string]time.Time // CSR name → when the watch saw its certificate
	want   int
	all    chan struct{} // closed when want CSRs are signed
	stop   context.CancelFunc
}

func kfWatchSigned(ctx context.Context, admin kubernetes.Interface, nodes []*kfNode) *kfWatch {
	byCN := map[string]bool{}
	for _, nd := range nodes {
		byCN[nd.chassis] = true
	}
	csrs := admin.CertificatesV1().CertificateSigningRequests()
	sel := fields.OneTermEqualSelector("spec.signerName", kube.DefaultSignerName).String()
	list, err := csrs.List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		fatal("kube: %v", err)
	}
	ctx, stop := context.WithCancel(ctx)
	w := &kfWatch{signed: map[string]time.Time{}, want: len(nodes), all: make(chan struct{}), stop: stop}
	go func() {
		rv := list.ResourceVersion
		for ctx.Err() == nil {
			wi, err := csrs.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: rv,
				AllowWatchBookmarks: true})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for ev := range wi.ResultChan() {
				c, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
				if !ok {
					continue
				}
				rv = c.ResourceVersion
				if ev.Type == watch.Bookmark || len(c.Status.Certificate) == 0 || !kfApproved(c) {
					continue
				}
				w.seen(c, byCN)
			}
			wi.Stop()
		}
	}()
	return w
}

func (w *kfWatch) seen(c *certificatesv1.CertificateSigningRequest, byCN map[string]bool) {
	at := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.signed[c.Name]; ok {
		return
	}
	// The ceiling's certificates are not the nodes'; the signer's must be.
	if cn := kfCertCN(c.Status.Certificate); !byCN[cn] && cn != kfCeilingCN {
		fatal("kube: CSR %s got a certificate for CN %q, not one of the nodes' chassis-ids", c.Name, cn)
	}
	w.signed[c.Name] = at
	if len(w.signed) == w.want {
		close(w.all)
	}
}

// kfFlood creates every node's CSR as the node, conc at a time, and waits
// (at most wait) until each is Approved and carries its certificate, as a
// watch sees it. Latency: from the create's return to the watch event.
func kfFlood(ctx context.Context, ca *server, admin kubernetes.Interface, nodes []*kfNode, conc int,
	wait time.Duration, kubePIDs []int,
) row {
	w := kfWatchSigned(ctx, admin, nodes)
	defer w.stop()
	created := make([]time.Time, len(nodes))
	names := make([]string, len(nodes))
	pids := append([]int{ca.cmd.Process.Pid}, kubePIDs...)
	cpu0 := cpuSeconds(pids)
	var profiling sync.WaitGroup
	if kubeFloodProfile != "" {
		// The server must outlive the profile: the caller waits for it.
		d := min(wait, 10*time.Second)
		if len(nodes) >= 2000 {
			d = min(wait, 60*time.Second)
		}
		profiling.Go(func() { ca.profile(kubeFloodProfile, d) })
		defer profiling.Wait()
	}
	start := time.Now()
	kfRun(conc, len(nodes), func(i int) error {
		c, err := nodes[i].client.Create(ctx, nodes[i].object(), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		created[i], names[i] = time.Now(), c.Name
		return nil
	})
	createdAll := time.Since(start)
	select {
	case <-w.all:
	case <-time.After(wait - min(wait, createdAll)):
	}
	el := time.Since(start)
	cpu1 := cpuSeconds(pids)
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	var lat []time.Duration
	for i, name := range names {
		if at, ok := w.signed[name]; ok {
			lat = append(lat, max(at.Sub(created[i]), 0))
		}
	}
	done := len(lat)
	p50, p99 := kfPercentiles(lat)
	r := row{Name: fmt.Sprintf("kube: flood, %d CSRs created at once as their nodes, signed by serve --kube, "+
		"%d in flight", len(nodes), conc), Rate: float64(done) / el.Seconds(), P50: p50, P99: p99,
		CPUus: 1e6 * (cpu1[0] - cpu0[0]) / float64(max(done, 1)),
		Value: fmt.Sprintf("%d/%d Approved with a certificate in %.1f s (created in %.1f s); "+
			"apiserver %.0f µs, etcd %.0f µs CPU/CSR", done, len(nodes), el.Seconds(), createdAll.Seconds(),
			1e6*(cpu1[1]-cpu0[1])/float64(max(done, 1)), 1e6*(cpu1[2]-cpu0[2])/float64(max(done, 1))),
		Comment: "latency: create's return to the watch event with the certificate"}
	if done < len(nodes) {
		say("kube: only %d of %d CSRs signed within %s", done, len(nodes), wait)
		r.Value += fmt.Sprintf(" (gave up after %s)", wait)
	}
	return r
}

func kfApproved(c *certificatesv1.CertificateSigningRequest) bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == certificatesv1.CertificateApproved && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func kfCertCN(certPEM []byte) string {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return ""
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return ""
	}
	return c.Subject.CommonName
}

// kfPercentiles returns the p50 and p99 in ms.
func kfPercentiles(lat []time.Duration) (p50, p99 float64) {
	if len(lat) == 0 {
		return 0, 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	at := func(q float64) float64 {
		return float64(s[min(int(q*float64(len(s))), len(s)-1)]) / float64(time.Millisecond)
	}
	return at(0.50), at(0.99)
}

// kfMemory reads VmHWM and VmRSS (MiB) of a process.
func kfMemory(pid int) map[string]float64 {
	out := map[string]float64{}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if f := strings.Fields(v); ok && len(f) == 2 && f[1] == "kB" {
			kb, _ := strconv.ParseFloat(f[0], 64)
			out[k] = kb / 1024
		}
	}
	return out
}
