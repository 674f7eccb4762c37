package integration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ipsecca/ipsecca/kube/kubetest"
)

// TestServeLeaseNamespaceMissing: `serve --kube` whose Lease namespace
// does not exist says so once, naming --lease-namespace, and reports not
// ready (gRPC health readiness entries, /readyz) while staying live; once
// the namespace is made it says so once and is ready. `--kube-only` has
// the metrics listener too: /metrics (the store and the pending CSRs) and
// /readyz.
func TestServeLeaseNamespaceMissing(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	admin := kubetest.Client(t, srv.Admin)
	adminKubeconfig := srv.KubeconfigFile(t, srv.Admin)
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %s waiting for: %s", timeout, what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	const said = "(kubectl create namespace lease-later)"

	metrics := freeAddr(t)
	ca := startServer(t, "", "--kube", "--kubeconfig", adminKubeconfig, "--lease-namespace", "lease-later",
		"--metrics-listen", metrics)
	readyz := "http://" + metrics + "/readyz"
	waitFor("/readyz 503", 10*time.Second, func() bool { c, _ := get(readyz); return c == 503 })
	time.Sleep(7 * time.Second) // the Lease is checked every 2 s: said once all the same
	if c, body := get(readyz); c != 503 || !strings.Contains(body, said) ||
		!strings.Contains(body, "--lease-namespace") {
		t.Fatalf("/readyz: %d %q", c, body)
	}
	for _, tc := range []struct {
		service string
		code    int
		status  string
	}{
		{"", 0, "SERVING"}, // liveness: restarting does not make a namespace
		{"ipsecca.v1.NodeService", 1, "NOT_SERVING"},
		{"ipsecca.v1.AdminService", 1, "NOT_SERVING"},
	} {
		r := run(t, ca.Env(), "health", "--service", tc.service)
		if r.Code != tc.code || strings.TrimSpace(r.Stdout) != tc.status {
			t.Fatalf("health --service %q: exit %d %q, want %d %s", tc.service, r.Code, r.Stdout, tc.code, tc.status)
		}
	}
	log := ca.Log.String()
	if n := strings.Count(log, said); n != 1 {
		t.Fatalf("the missing namespace was said %d times, want once:\n%s", n, log)
	}
	if strings.Contains(log, "leader election record") {
		t.Fatalf("client-go's elector logged the missing namespace itself:\n%s", log)
	}

	if _, err := admin.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "lease-later"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("ready once the namespace exists", 15*time.Second, func() bool {
		c, _ := get(readyz)
		return c == 200 && run(t, ca.Env(), "health", "--service", "ipsecca.v1.NodeService").Code == 0
	})
	if n := strings.Count(ca.Log.String(), "can be made now"); n != 1 {
		t.Fatalf("the resolution was said %d times, want once:\n%s", n, ca.Log.String())
	}
	ca.Stop()

	// --kube-only: no gRPC, but metrics and readiness.
	metrics = freeAddr(t)
	only := newServer(t, "", "--kube-only", "--kubeconfig", adminKubeconfig, "--lease-namespace", "lease-later",
		"--metrics-listen", metrics)
	only.Launch()
	waitFor(
		"kube-only /readyz 200",
		20*time.Second,
		func() bool { c, _ := get("http://" + metrics + "/readyz"); return c == 200 },
	)
	c, body := get("http://" + metrics + "/metrics")
	for _, m := range []string{"ipsecca_store_up 1", "ipsecca_kube_csr_pending 0",
		"ipsecca_kube_csr_oldest_pending_timestamp_seconds 0"} {
		if c != 200 || !strings.Contains(body, m) {
			t.Fatalf("kube-only /metrics: %d, want %q in:\n%s", c, m, body)
		}
	}
}
