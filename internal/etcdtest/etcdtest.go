// Package etcdtest runs a real etcd cluster of separate processes on
// loopback for tests and benchmarks: the etcd binary is built from the Go
// module proxy by internal/testbin. Members can be killed (SIGKILL) and
// restarted on their data.
package etcdtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ipsecca/ipsecca/internal/testbin"
)

// MaxTxnOps is the --max-txn-ops the test clusters run with (etcd's
// default is 128); ipsecca replicas are told the same.
const MaxTxnOps = 1024

// Options configure a cluster.
type Options struct {
	Members int // 3 when zero
	// Fsync keeps etcd's fsync on (benchmarks); tests run without it.
	Fsync bool
	// Dir holds the members' data and logs; a temp dir when empty.
	Dir string
	// TLS makes the members serve clients over HTTPS and require a client
	// certificate (Cluster.TLSFiles); peers still talk plain HTTP.
	TLS bool
}

// TLSFiles are the PEM files of a TLS cluster: the CA that issued the
// members' and the client's certificates, and the client's pair.
type TLSFiles struct {
	CA, ClientCert, ClientKey string
}

// Cluster is a running etcd cluster.
type Cluster struct {
	Dir     string
	TLS     *TLSFiles // set for a TLS cluster
	members []*Member
	bin     string
	ownDir  bool
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dataDir   string
	log       string
	args      []string
	cmd       *exec.Cmd
	done      chan struct{}
}

// Start starts the cluster, waits until it has a leader, and stops it
// when the test ends. It fails the test when etcd cannot be built or
// does not come up: nothing is skipped.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir() // removed after Stop (cleanups run last first)
	}
	c, err := Run(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// Run is Start for programs outside tests (the benchmark); call Stop.
func Run(o Options) (*Cluster, error) {
	bin, err := testbin.Etcd()
	if err != nil {
		return nil, fmt.Errorf(
			"etcdtest: building etcd from the Go module proxy failed (needed; not skipped):\n%v",
			err,
		)
	}
	if o.Members <= 0 {
		o.Members = 3
	}
	ownDir := false
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "etcdtest-"); err != nil {
			return nil, err
		}
		ownDir = true // members preallocate about 120 MB each: Stop removes it
	}
	ports, err := testbin.FreePorts(2 * o.Members)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: o.Dir, bin: bin, ownDir: ownDir}
	scheme := "http"
	var serverCert, serverKey string
	if o.TLS {
		scheme = "https"
		if c.TLS, serverCert, serverKey, err = writeTLS(o.Dir); err != nil {
			return nil, err
		}
	}
	var initial []string
	for i := range o.Members {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		m.dataDir = filepath.Join(o.Dir, m.Name)
		m.log = filepath.Join(o.Dir, m.Name+".log")
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.members = append(c.members, m)
	}
	for _, m := range c.members {
		m.args = []string{"--name", m.Name, "--data-dir", m.dataDir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "ipsecca-test", "--max-txn-ops", fmt.Sprint(MaxTxnOps),
			"--heartbeat-interval", "50", "--election-timeout", "500",
			"--log-level", "warn"}
		if !o.Fsync {
			m.args = append(m.args, "--unsafe-no-fsync")
		}
		if o.TLS {
			m.args = append(
				m.args,
				"--cert-file",
				serverCert,
				"--key-file",
				serverKey,
				"--client-cert-auth",
				"--trusted-ca-file",
				c.TLS.CA,
			)
		}
		if err := c.start(m); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitHealthy(60 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(m *Member) error {
	log, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, m.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("etcdtest: start %s: %w", m.Name, err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	done := m.done
	go func() { cmd.Wait(); log.Close(); close(done) }()
	return nil
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Pid is the member's process id (0 when it is not running).
func (m *Member) Pid() int {
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Members are the cluster's members.
func (c *Cluster) Members() []*Member { return c.members }

// Kill sends SIGKILL to member i and waits for it to exit.
func (c *Cluster) Kill(i int) {
	m := c.members[i]
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// Restart starts member i again on its data directory.
func (c *Cluster) Restart(i int) error { return c.start(c.members[i]) }

// Stop kills every member, and removes the data when Run made the
// directory.
func (c *Cluster) Stop() {
	for i := range c.members {
		c.Kill(i)
	}
	if c.ownDir {
		os.RemoveAll(c.Dir)
	}
}

// Log returns the tail of member i's log.
func (c *Cluster) Log(i int) string { return testbin.Tail(c.members[i].log, 30) }

// WaitHealthy waits until a linearizable read succeeds through the
// running members.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var eps []string
	for _, m := range c.members {
		if m.cmd != nil {
			eps = append(eps, m.ClientURL)
		}
	}
	var last error
	for time.Now().Before(deadline) {
		cfg := clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()}
		if c.TLS != nil {
			tc, err := c.ClientTLS()
			if err != nil {
				return err
			}
			cfg.TLS = tc
		}
		cli, err := clientv3.New(cfg)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = cli.Get(ctx, "health")
			cancel()
			cli.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		for i, m := range c.members {
			if m.cmd != nil {
				select {
				case <-m.done:
					return fmt.Errorf("etcdtest: %s exited:\n%s", m.Name, c.Log(i))
				default:
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("etcdtest: cluster not healthy after %s: %v", timeout, last)
}

// ClientTLS is a client configuration for a TLS cluster.
func (c *Cluster) ClientTLS() (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(c.TLS.ClientCert, c.TLS.ClientKey)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(c.TLS.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// writeTLS makes a throwaway CA, a server certificate for 127.0.0.1 and
// a client certificate, as PEM files in dir.
func writeTLS(dir string) (files *TLSFiles, serverCert, serverKey string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "etcdtest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, "", "", err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name string, typ string, der []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (certPath, keyPath string, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
		if err != nil {
			return "", "", err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", "", err
		}
		if certPath, err = write(cn+".pem", "CERTIFICATE", der); err != nil {
			return "", "", err
		}
		keyPath, err = write(cn+"-key.pem", "PRIVATE KEY", keyDER)
		return certPath, keyPath, err
	}
	files = &TLSFiles{}
	if files.CA, err = write("ca.pem", "CERTIFICATE", caDER); err != nil {
		return nil, "", "", err
	}
	if serverCert, serverKey, err = leaf(2, "etcd-server", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}); err != nil {
		return nil, "", "", err
	}
	if files.ClientCert, files.ClientKey, err = leaf(3, "ipsecca", x509.ExtKeyUsageClientAuth, nil); err != nil {
		return nil, "", "", err
	}
	return files, serverCert, serverKey, nil
}
