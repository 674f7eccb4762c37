// Package integration runs the real ipsecca binary against real tools
// (openssl, certutil, pk12util) on temporary data directories.
package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// binary is the ipsecca binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ipsecca-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ipsecca")
	build := exec.Command("go", "build", "-o", binary, "github.com/ipsecca/ipsecca/cmd/ipsecca")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "FATAL: cannot build the ipsecca binary:", err)
		os.Exit(1)
	}
	for _, tool := range []string{"openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(
				os.Stderr,
				"FATAL: %s not found: run `make deps` (apt-get install openssl libnss3-tools)\n",
				tool,
			)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a goroutine-safe buffer for a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serverProc is a running `ipsecca serve`.
type serverProc struct {
	t        *testing.T
	DataDir  string
	Addr     string
	Args     []string // extra serve flags
	ExtraEnv []string // added to the process's environment
	// Cred, when set, runs the process as that user and group.
	Cred *syscall.Credential
	cmd  *exec.Cmd
	Log  *syncBuffer // stderr of every run, appended
	done chan struct{}
}

// freePort returns a loopback port free at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer runs `ipsecca serve` on a fresh data dir (or dataDir if not
// empty) and waits until its health service answers SERVING.
func startServer(t *testing.T, dataDir string, extra ...string) *serverProc {
	t.Helper()
	if dataDir == "" {
		dataDir = filepath.Join(t.TempDir(), "ca")
	}
	s := newServer(t, dataDir, extra...)
	s.Start()
	return s
}

// newServer prepares a server process (not started) that is stopped, and
// its log shown on failure, when the test ends.
func newServer(t *testing.T, dataDir string, extra ...string) *serverProc {
	t.Helper()
	s := &serverProc{
		t:       t,
		DataDir: dataDir,
		Addr:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		Args:    extra,
		Log:     &syncBuffer{},
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("server %s log:\n%s", s.DataDir, s.Log.String())
		}
	})
	return s
}

// Start starts the process and waits for SERVING.
func (s *serverProc) Start() {
	s.t.Helper()
	s.Launch()
	s.WaitServing()
}

// Launch starts the process without waiting.
func (s *serverProc) Launch() {
	s.t.Helper()
	args := append([]string{"serve", "--data-dir", s.DataDir, "--listen", s.Addr}, s.Args...)
	s.cmd = exec.Command(binary, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.Log, s.Log
	if len(s.ExtraEnv) > 0 {
		s.cmd.Env = append(os.Environ(), s.ExtraEnv...)
	}
	if s.Cred != nil {
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.Cred}
	}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.done) }()
}

// WaitServing waits until the launched process reports SERVING.
func (s *serverProc) WaitServing() {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			s.t.Fatalf("ipsecca serve exited at start:\n%s", s.Log.String())
		default:
		}
		if s.healthy() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("ipsecca serve not healthy within 20s:\n%s", s.Log.String())
}

func (s *serverProc) healthy() bool {
	caPEM, err := os.ReadFile(filepath.Join(s.DataDir, "ca.pem"))
	if err != nil {
		return false
	}
	conn, err := dialTLS(s.Addr, caPEM, nil)
	if err != nil {
		return false
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// Stop ends the process with SIGTERM (SIGKILL after 10 s).
func (s *serverProc) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Kill ends the process with SIGKILL.
func (s *serverProc) Kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// CAFile is the data directory's CA bundle.
func (s *serverProc) CAFile() string { return filepath.Join(s.DataDir, "ca.pem") }

// Env is the environment admin commands use to find this server.
func (s *serverProc) Env() []string {
	return []string{"IPSECCA_SERVER=" + s.Addr, "IPSECCA_DATA_DIR=" + s.DataDir}
}

// result of a CLI run.
type result struct {
	Stdout, Stderr string
	Code           int
}

// run runs the ipsecca CLI with env added to the environment.
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// mustRun runs the CLI and fails the test unless it exits 0.
func mustRun(t *testing.T, env []string, args ...string) string {
	t.Helper()
	r := run(t, env, args...)
	if r.Code != 0 {
		t.Fatalf("ipsecca %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// enrollArgs is `ipsecca enroll` against s with a token (tokenFlag is
// --token or --token-file), a CSR file, and the certificate written to out.
func (s *serverProc) enrollArgs(tokenFlag, token, csr, out string) []string {
	return []string{"enroll", "--server", s.Addr, "--ca-file", s.CAFile(), tokenFlag, token, "--csr", csr, "--out", out}
}

// sh runs a command and returns its combined output, failing on error.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// opensslCSR makes a key and CSR with openssl, as a node would; keyArgs
// are the -newkey value (e.g. "rsa:2048", "ec").
func opensslCSR(t *testing.T, dir, name, subject string, extra ...string) (keyFile, csrFile string) {
	t.Helper()
	keyFile, csrFile = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".csr")
	args := []string{"req", "-new", "-nodes", "-keyout", keyFile, "-subj", subject, "-out", csrFile}
	args = append(args, extra...)
	if !containsArg(extra, "-newkey") && !containsArg(extra, "-key") {
		args = append(args, "-newkey", "rsa:2048")
	}
	sh(t, "openssl", args...)
	return keyFile, csrFile
}

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}

// dialTLS connects to addr trusting caPEM, presenting cert when given.
func dialTLS(addr string, caPEM []byte, cert *tls.Certificate) (*grpc.ClientConn, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
}
