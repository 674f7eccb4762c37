package kube_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/ipsecca/ipsecca/kube"
	"github.com/ipsecca/ipsecca/kube/deploy"
	"github.com/ipsecca/ipsecca/kube/kubetest"
)

// The signer's client is not held to client-go's default of 5 requests a
// second (a flood of node CSRs would be signed at about one a second);
// limits the user's configuration sets are kept.
func TestNewClientLimits(t *testing.T) {
	for _, tc := range []struct {
		cfg  rest.Config
		want float32
	}{
		{rest.Config{Host: "https://127.0.0.1:1"}, kube.ClientQPS},
		{rest.Config{Host: "https://127.0.0.1:1", QPS: 7, Burst: 9}, 7},
	} {
		c, err := kube.NewClient(&tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.CertificatesV1().RESTClient().GetRateLimiter().QPS(); got != tc.want {
			t.Errorf("QPS %v: the client allows %v requests/s, want %v", tc.cfg.QPS, got, tc.want)
		}
	}
}

// A signed CSR costs the API server two writes (approval, status) of that
// CSR and no read, and the events of the signer's own writes cost nothing:
// what a flood of node CSRs costs the API server beyond the creates.
func TestRequestsPerCSR(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	requests := map[string]int{} // "GET"/"PUT approval"/"PUT status" on one CSR → count
	cfg := e.srv.ServiceAccountConfig(t, kube.DefaultNamespace, deploy.NameCA)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			const coll = "/apis/certificates.k8s.io/v1/certificatesigningrequests/"
			if _, rest, ok := strings.Cut(r.URL.Path, coll); ok {
				key := r.Method
				if _, sub, ok := strings.Cut(rest, "/"); ok {
					key += " " + sub
				}
				mu.Lock()
				requests[key]++
				mu.Unlock()
			}
			return rt.RoundTrip(r)
		})
	})
	conf := e.config("replica-1")
	conf.Client = kubetest.Client(t, cfg)
	s := e.start(conf, true)
	const n = 3
	var names []string
	for i := range n {
		node, id := fmt.Sprintf("node-%d", i), chassisID()
		e.addNode(node, id)
		names = append(names, e.createCSR(e.node(node), makeCSR(t, ecKey(t), id, []string{id}),
			csrSpec{node: node}).Name)
	}
	for _, name := range names {
		waitCertificate(t, e.admin, name, 20*time.Second)
	}
	// The events of the last writes reach the signer and are handled.
	time.Sleep(time.Second)
	s.Stop()
	mu.Lock()
	defer mu.Unlock()
	want := map[string]int{"PUT approval": n, "PUT status": n}
	if fmt.Sprint(requests) != fmt.Sprint(want) {
		t.Fatalf("requests on single CSRs for %d signed CSRs: %v, want %v", n, requests, want)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
