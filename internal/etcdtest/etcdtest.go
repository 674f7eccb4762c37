// Package etcdtest runs a real etcd cluster of separate processes on
// loopback for tests and benchmarks: the etcd binary is built from the Go
// module proxy by internal/testbin. Members can be killed (SIGKILL) and
// restarted on their data.
package etcdtest

import (
	"context"
	"fmt"
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
}

// Cluster is a running etcd cluster.
type Cluster struct {
	Dir     string
	members []*Member
	bin     string
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
		return nil, fmt.Errorf("etcdtest: building etcd from the Go module proxy failed (needed; not skipped):\n%v", err)
	}
	if o.Members <= 0 {
		o.Members = 3
	}
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "etcdtest-"); err != nil {
			return nil, err
		}
	}
	ports, err := freePorts(2 * o.Members)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: o.Dir, bin: bin}
	var initial []string
	for i := range o.Members {
		m := &Member{Name: fmt.Sprintf("m%d", i), ClientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]), PeerURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])}
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

// Stop kills every member.
func (c *Cluster) Stop() {
	for i := range c.members {
		c.Kill(i)
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
		cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
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

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
