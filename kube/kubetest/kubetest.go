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

	caFile    string
	tokens    map[string]string
	procs     []*process // in start order
	removeDir bool       // Run made Dir
}

// Binaries returns the paths of the kube-apiserver and etcd binaries,
// building them when the cache has none for the pinned versions.
func Binaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	apiserver, etcd, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	return apiserver, etcd
}

func binaries() (apiserver, etcd string, err error) {
	etcd, err = testbin.Etcd()
	if err == nil {
		apiserver, err = testbin.KubeAPIServer()
	}
	if err != nil {
		return "", "", fmt.Errorf(
			"kubetest: building kube-apiserver and etcd from the Go module proxy failed (the kube tests need them; "+
				"this is not skipped):\n%w",
			err,
		)
	}
	return apiserver, etcd, nil
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
	s, err := run(opts, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

// Run is Start outside a test (a benchmark program): it runs etcd and
// kube-apiserver in a new temporary directory until Stop, which also
// removes that directory.
func Run(opts Options) (*Server, error) {
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, err
	}
	s, err := run(opts, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.removeDir = true
	return s, nil
}

// Stop stops a server from Run (Start's stop with the test) and removes
// its directory.
func (s *Server) Stop() {
	s.stop()
	if s.removeDir {
		os.RemoveAll(s.Dir)
	}
}

func (s *Server) stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop()
	}
	s.procs = nil
}

func run(opts Options, dir string) (s *Server, err error) {
	apiserverBin, etcdBin, err := binaries()
	if err != nil {
		return nil, err
	}
	ports, err := testbin.FreePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	s = &Server{URL: fmt.Sprintf("https://127.0.0.1:%d", ports[2]), Dir: dir, tokens: map[string]string{}}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()

	etcd, err := s.startProcess("etcd", etcdBin,
		"--name", "default", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return nil, err
	}

	keyPEM, pubPEM, err := serviceAccountKey()
	if err != nil {
		return nil, err
	}
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(saKey, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(saPub, pubPEM, 0o644); err != nil {
		return nil, err
	}
	var tokens bytes.Buffer
	users := append([]User{{Name: AdminUser, Groups: []string{"system:masters"}}}, opts.Users...)
	for i, u := range users {
		tok, err := randomToken()
		if err != nil {
			return nil, err
		}
		s.tokens[u.Name] = tok
		fmt.Fprintf(&tokens, "%s,%s,uid-%d", tok, u.Name, i)
		if len(u.Groups) > 0 {
			fmt.Fprintf(&tokens, ",%q", strings.Join(u.Groups, ","))
		}
		tokens.WriteByte('\n')
	}
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, tokens.Bytes(), 0o600); err != nil {
		return nil, err
	}
	certDir := filepath.Join(dir, "certs")
	s.caFile = filepath.Join(certDir, "apiserver.crt")

	kas, err := s.startProcess("kube-apiserver", apiserverBin,
		"--etcd-servers="+etcdURL,
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--cert-dir="+certDir, fmt.Sprintf("--secure-port=%d", ports[2]), "--bind-address=127.0.0.1",
		"--token-auth-file="+tokenFile, "--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24", "--profiling=false")
	if err != nil {
		return nil, err
	}

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
				return nil, fmt.Errorf("kubetest: %s exited before the API server was ready:\n%s",
					p.name, tail(p.log, 40))
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("kubetest: kube-apiserver not ready after 90s (last: %v):\n%s",
				err, tail(kas.log, 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
	return s, nil
}

// PID is the process id of the named process ("etcd", "kube-apiserver"),
// 0 when there is none: a benchmark reads its CPU time.
func (s *Server) PID(name string) int {
	for _, p := range s.procs {
		if p.name == name && p.cmd.Process != nil {
			return p.cmd.Process.Pid
		}
	}
	return 0
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
	cfg, err := s.ServiceAccount(context.Background(), namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// ServiceAccount is ServiceAccountConfig outside a test.
func (s *Server) ServiceAccount(ctx context.Context, namespace, name string) (*rest.Config, error) {
	client, err := kubernetes.NewForConfig(s.Admin)
	if err != nil {
		return nil, err
	}
	exp := int64(3600)
	tr, err := client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}},
		metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubetest: token for service account %s/%s: %w", namespace, name, err)
	}
	return s.configWithToken(tr.Status.Token), nil
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
	p, err := s.WriteKubeconfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// WriteKubeconfig is KubeconfigFile outside a test: the file is in Dir.
func (s *Server) WriteKubeconfig(cfg *rest.Config) (string, error) {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: test, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`, s.URL, s.caFile, cfg.BearerToken)
	f, err := os.CreateTemp(s.Dir, "kubeconfig-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := io.WriteString(f, kc); err != nil {
		return "", err
	}
	return f.Name(), nil
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

func (s *Server) startProcess(name, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(s.Dir, name+".log")
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = log, log
	// Die with the test process even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("kubetest: start %s: %w", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(p.done) }()
	s.procs = append(s.procs, p)
	return p, nil
}

func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func randomToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// serviceAccountKey makes the key pair the API server signs and checks
// service-account tokens with.
func serviceAccountKey() (keyPEM, pubPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}

// Create creates objects on the API server as the admin, with strict
// field validation (an unknown field is an error).
func Create(t testing.TB, s *Server, objs []runtime.Object) {
	t.Helper()
	if err := CreateObjects(context.Background(), s, objs); err != nil {
		t.Fatal(err)
	}
}

// CreateObjects is Create outside a test.
func CreateObjects(ctx context.Context, s *Server, objs []runtime.Object) error {
	dyn, err := dynamic.NewForConfig(s.Admin)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(s.Admin)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	for _, obj := range objs {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{Object: m}
		gvk := obj.GetObjectKind().GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s: %w", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if u.GetNamespace() != "" {
			ri = dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
		}
		if _, err := ri.Create(ctx, u,
			metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}); err != nil {
			return fmt.Errorf("create %s %s/%s on the API server: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
		}
	}
	return nil
}
