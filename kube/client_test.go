package kube_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

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

// The signer's client asks for no gzip: the API server would compress its
// informers' watch streams (the initial objects and every event after),
// CPU on both sides for each CSR of a flood on a cluster-local connection.
// A client-go default client, the control, gets them compressed.
func TestNewClientNoCompression(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Options{})
	admin := kubetest.Client(t, srv.Admin)
	for i := range 64 {
		if _, err := admin.CoreV1().ConfigMaps("default").Create(context.Background(), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("big-%d", i)},
			Data:       map[string]string{"k": strings.Repeat("x", 4096)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	watchCompressed := func(newClient func(*rest.Config) (kubernetes.Interface, error)) bool {
		var mu sync.Mutex
		gzipped := false
		cfg := rest.CopyConfig(srv.Admin)
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return roundTripper(func(r *http.Request) (*http.Response, error) {
				resp, err := rt.RoundTrip(r)
				if err == nil && resp.Uncompressed {
					mu.Lock()
					gzipped = true
					mu.Unlock()
				}
				return resp, err
			})
		})
		c, err := newClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		// As an informer watches: the current objects first (which make it
		// worth compressing), then the changes.
		w, err := c.CoreV1().ConfigMaps("default").Watch(ctx, metav1.ListOptions{SendInitialEvents: ptr.To(true),
			ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan, AllowWatchBookmarks: true})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		name := fmt.Sprintf("cm-%d", time.Now().UnixNano())
		if _, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": strings.Repeat("x", 4096)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for ev := range w.ResultChan() {
			if cm, ok := ev.Object.(*corev1.ConfigMap); ok && cm.Name == name {
				break
			}
		}
		mu.Lock()
		defer mu.Unlock()
		return gzipped
	}
	if !watchCompressed(func(c *rest.Config) (kubernetes.Interface, error) { return kubernetes.NewForConfig(c) }) {
		t.Fatal("control: client-go's default client got no gzip response; the test sees nothing")
	}
	if watchCompressed(kube.NewClient) {
		t.Fatal("the signer's client got gzip-compressed responses")
	}
}
