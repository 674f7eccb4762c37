// Package kubetest runs a real kube-apiserver over a real etcd for tests:
// no fake clientset. The binaries come from internal/testbin (built from
// the Go module proxy and cached; the first run pays about 4 minutes). A
// build that fails fails the test: nothing here skips.
//
// The API server authenticates static-token users (Options.Users; an
// "admin" in system:masters is always there) and service-account tokens,
// authorizes with RBAC only, and runs the default admission chain, so the
// certificates.k8s.io approval and signing checks (verbs approve and sign
// on signers) apply as on a real cluster.
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/ipsecca/ipsecca/internal/testbin"
)

// AdminUser is the static-token user in system:masters every server has.
const AdminUser = "admin"

// User is a static-token identity of the API server.
type User struct {
	Name   string
	Groups []string
}

// Options configure a server.
type Options struct {
	// Users are static-token users besides AdminUser.
	Users []User
}

// Server is a running etcd + kube-apiserver pair.
type Server struct {
	// Admin is a config for AdminUser (system:masters).
	Admin *rest.Config
	// URL is the API server's https address.
	URL string
	// Dir holds the logs, certificates and etcd data.
	Dir string

	caFile string
	tokens map[string]string
}

// Binaries returns the paths of the kube-apiserver and etcd binaries,
// building them when the cache has none for the pinned versions.
func Binaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	etcd, err := testbin.Etcd()
	if err == nil {
		apiserver, err = testbin.KubeAPIServer()
	}
	if err != nil {
		t.Fatalf(
			"kubetest: building kube-apiserver and etcd from the Go module proxy failed (the kube tests need them; "+
				"this is not skipped):\n%v",
			err,
		)
	}
	return apiserver, etcd
}

func exists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Size() > 0
}

func tail(path string, n int) string { return testbin.Tail(path, n) }

// Start runs etcd and kube-apiserver for the test and stops them when it
// ends. It fails the test when either does not come up.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	apiserverBin, etcdBin := Binaries(t)
	dir := t.TempDir()
	ports, err := testbin.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	s := &Server{URL: fmt.Sprintf("https://127.0.0.1:%d", ports[2]), Dir: dir, tokens: map[string]string{}}

	etcd := startProcess(t, dir, "etcd", etcdBin,
		"--name", "default", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn")

	keyPEM, pubPEM := serviceAccountKey(t)
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	writeFile(t, saKey, keyPEM, 0o600)
	writeFile(t, saPub, pubPEM, 0o644)
	var tokens bytes.Buffer
	users := append([]User{{Name: AdminUser, Groups: []string{"system:masters"}}}, opts.Users...)
	for i, u := range users {
		tok := randomToken(t)
		s.tokens[u.Name] = tok
		fmt.Fprintf(&tokens, "%s,%s,uid-%d", tok, u.Name, i)
		if len(u.Groups) > 0 {
			fmt.Fprintf(&tokens, ",%q", strings.Join(u.Groups, ","))
		}
		tokens.WriteByte('\n')
	}
	tokenFile := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokenFile, tokens.Bytes(), 0o600)
	certDir := filepath.Join(dir, "certs")
	s.caFile = filepath.Join(certDir, "apiserver.crt")

	kas := startProcess(t, dir, "kube-apiserver", apiserverBin,
		"--etcd-servers="+etcdURL,
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--cert-dir="+certDir, fmt.Sprintf("--secure-port=%d", ports[2]), "--bind-address=127.0.0.1",
		"--token-auth-file="+tokenFile, "--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24", "--profiling=false")

	s.Admin = s.ConfigFor(AdminUser)
	var client kubernetes.Interface
	deadline := time.Now().Add(90 * time.Second)
	for {
		// The API server writes its self-signed certificate at start.
		var err error
		if client == nil && exists(s.caFile) {
			client, err = kubernetes.NewForConfig(s.Admin)
		}
		if client != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var body []byte
			body, err = client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			cancel()
			if err == nil && strings.TrimSpace(string(body)) == "ok" {
				break
			}
		}
		for _, p := range []*process{etcd, kas} {
			if p.exited() {
				t.Fatalf("kubetest: %s exited before the API server was ready:\n%s", p.name, tail(p.log, 40))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubetest: kube-apiserver not ready after 90s (last: %v):\n%s", err, tail(kas.log, 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
	return s
}

// ConfigFor returns a config authenticating as the static-token user.
func (s *Server) ConfigFor(user string) *rest.Config {
	tok, ok := s.tokens[user]
	if !ok {
		panic("kubetest: no static-token user " + user)
	}
	return s.configWithToken(tok)
}

func (s *Server) configWithToken(tok string) *rest.Config {
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     tok,
		TLSClientConfig: rest.TLSClientConfig{CAFile: s.caFile},
		QPS:             500,
		Burst:           1000,
		Timeout:         30 * time.Second,
	}
}

// ServiceAccountConfig returns a config authenticating as the service
// account (which must exist) with a token from the TokenRequest API.
func (s *Server) ServiceAccountConfig(t testing.TB, namespace, name string) *rest.Config {
	t.Helper()
	client := kubernetes.NewForConfigOrDie(s.Admin)
	exp := int64(3600)
	tr, err := client.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: token for service account %s/%s: %v", namespace, name, err)
	}
	return s.configWithToken(tr.Status.Token)
}

// Client returns a clientset for cfg.
func Client(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// KubeconfigFile writes a kubeconfig for cfg (token authentication) and
// returns its path.
func (s *Server) KubeconfigFile(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: test, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`, s.URL, s.caFile, cfg.BearerToken)
	f, err := os.CreateTemp(s.Dir, "kubeconfig-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, kc); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

type process struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func startProcess(t testing.TB, dir, name, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	// Die with the test process even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("kubetest: start %s: %v", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func writeFile(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

func randomToken(t testing.TB) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// serviceAccountKey makes the key pair the API server signs and checks
// service-account tokens with.
func serviceAccountKey(t testing.TB) (keyPEM, pubPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
}

// Create creates objects on the API server as the admin, with strict
// field validation (an unknown field is an error).
func Create(t testing.TB, s *Server, objs []runtime.Object) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(s.Admin)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(Client(t, s.Admin).Discovery()))
	for _, obj := range objs {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		gvk := obj.GetObjectKind().GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if u.GetNamespace() != "" {
			ri = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
		}
		if _, err := ri.Create(context.Background(), u,
			metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}); err != nil {
			t.Fatalf("create %s %s/%s on the API server: %v", gvk.Kind, u.GetNamespace(), u.GetName(), err)
		}
	}
}
