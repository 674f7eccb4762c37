package kube_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
)

// TestLeaseNotMakeable: a Lease the replica cannot make (its namespace
// missing, or no permission there) is said once, naming --lease-namespace
// and the namespace, the replica reports not ready and checks again
// quietly; once the cause is gone it says so once, leads and signs.
func TestLeaseNotMakeable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	grant := func(ns string) {
		t.Helper()
		role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "lease", Namespace: ns},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"},
				Verbs: []string{"get", "create", "update"}}}}
		if _, err := e.admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "lease", Namespace: ns},
			RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "lease"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: deploy.NameCA,
				Namespace: kube.DefaultNamespace}}}
		if _, err := e.admin.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createNS := func(ns string) {
		t.Helper()
		_, err := e.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name      string
		namespace string
		client    kubernetes.Interface
		before    func(ns string) // the state the replica starts in
		fix       func(ns string)
		said      string
	}{
		// With cluster-admin credentials (serve --kubeconfig) the
		// namespace is all that is missing.
		{name: "namespace missing", namespace: "lease-later", client: e.admin, before: func(string) {},
			fix: createNS, said: "does not exist: create it (kubectl create namespace lease-later)"},
		// Under the printed RBAC the replica may make Leases in its own
		// namespace only.
		{name: "no permission", namespace: "elsewhere", client: e.signer, before: createNS, fix: grant,
			said: "may not create the leader-election Lease in namespace"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.before(tc.namespace)
			var logs lockedBuffer
			cfg := e.config("replica-" + tc.namespace)
			cfg.Client = tc.client
			cfg.LeaderElection.Namespace = tc.namespace
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s := e.start(cfg, false)
			eventually(t, 10*time.Second, "not ready", func() bool { return s.Ready() != nil })
			time.Sleep(10 * cfg.LeaderElection.RetryPeriod) // a dozen checks, said once
			if err := s.Ready(); !strings.Contains(err.Error(), tc.said) ||
				!strings.Contains(
					err.Error(),
					`"`+tc.namespace+`"`,
				) || !strings.Contains(err.Error(), "--lease-namespace") {
				t.Fatalf("Ready: %v; want it to say %q and name %q and --lease-namespace", err, tc.said, tc.namespace)
			}
			if n := strings.Count(logs.String(), tc.said); n != 1 {
				t.Fatalf("said %d times, want once:\n%s", n, logs.String())
			}
			if !strings.Contains(logs.String(), "level=ERROR") || s.Leading() {
				t.Fatalf("want one error and no leadership:\n%s", logs.String())
			}

			tc.fix(tc.namespace)
			eventually(t, 20*time.Second, "leading once fixed", func() bool { return s.Leading() })
			if err := s.Ready(); err != nil {
				t.Fatalf("Ready once fixed: %v", err)
			}
			if n := strings.Count(logs.String(), "can be made now"); n != 1 {
				t.Fatalf("resolution said %d times, want once:\n%s", n, logs.String())
			}
			// It signs.
			node := []string{"node-a", "node-b"}[i]
			id := chassisID()
			e.addNode(node, id)
			c := e.createCSR(e.node(node), makeCSR(t, ecKey(t), id, []string{id}), csrSpec{node: node})
			waitCertificate(t, e.node(node), c.Name, 10*time.Second)
			s.Stop()
		})
	}
}

// TestPendingCSRMetrics: every replica, leading or not, reports how many
// CSRs of its signer wait for an answer and when the oldest was made;
// answered CSRs leave the count, and none pending is 0 and 0.
func TestPendingCSRMetrics(t *testing.T) {
	e := newEnv(t)
	idA, idB := chassisID(), chassisID()
	e.addNode("node-a", idA)
	e.addNode("node-b", idB)
	// A replica that does not lead (it is never started) still reports.
	reg := prometheus.NewRegistry()
	cfg := e.config("follower")
	cfg.Metrics = reg
	if _, err := kube.New(cfg); err != nil {
		t.Fatal(err)
	}
	gauge := func(r *prometheus.Registry, name string) (float64, bool) {
		t.Helper()
		mfs, err := r.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	check := func(r *prometheus.Registry, what string, pending, oldest float64) {
		t.Helper()
		n, ok1 := gauge(r, "ipsecca_kube_csr_pending")
		o, ok2 := gauge(r, "ipsecca_kube_csr_oldest_pending_timestamp_seconds")
		if !ok1 || !ok2 || n != pending || o != oldest {
			t.Fatalf("%s: pending %v (%v), oldest %v (%v); want %v and %v", what, n, ok1, o, ok2, pending, oldest)
		}
	}
	check(reg, "none yet", 0, 0)

	first := e.createCSR(e.node("node-a"), makeCSR(t, ecKey(t), idA, []string{idA}), csrSpec{node: "node-a"})
	time.Sleep(1100 * time.Millisecond) // creation timestamps have a one-second resolution
	e.createCSR(e.node("node-b"), makeCSR(t, ecKey(t), idB, []string{idB}), csrSpec{node: "node-b"})
	want := float64(first.CreationTimestamp.Unix())
	// The list a follower makes may be served from the API server's cache.
	eventually(t, 5*time.Second, "two pending on the follower", func() bool {
		n, _ := gauge(reg, "ipsecca_kube_csr_pending")
		return n == 2
	})
	check(reg, "two waiting, seen by a follower", 2, want)

	// A leader answers them; then both report nothing pending.
	lreg := prometheus.NewRegistry()
	lcfg := e.config("leader")
	lcfg.Metrics = lreg
	leader := e.start(lcfg, true)
	e.waitDecided(first.Name, 10*time.Second)
	eventually(t, 10*time.Second, "nothing pending", func() bool {
		a, _ := gauge(lreg, "ipsecca_kube_csr_pending")
		b, _ := gauge(reg, "ipsecca_kube_csr_pending")
		return a == 0 && b == 0
	})
	check(lreg, "answered, leader", 0, 0)
	check(reg, "answered, follower", 0, 0)
	leader.Stop()

	// Outside Full mode the CSRs are another signer's: nothing reported.
	xreg := prometheus.NewRegistry()
	xcfg := e.config("external")
	xcfg.Mode = kube.ModeExternal
	xcfg.Metrics = xreg
	if _, err := kube.New(xcfg); err != nil {
		t.Fatal(err)
	}
	if _, ok := gauge(xreg, "ipsecca_kube_csr_pending"); ok {
		t.Fatal("pending CSRs reported outside Full mode")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
