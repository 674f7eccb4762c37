package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// node is one node's sidecar setup.
type node struct {
	name, nss, state, tokenFile string
	srv                         *serverProc
}

func newNode(t *testing.T, srv *serverProc, name string) *node {
	dir := t.TempDir()
	n := &node{
		name:      name,
		nss:       filepath.Join(dir, "nss"),
		state:     filepath.Join(dir, "state"),
		tokenFile: filepath.Join(dir, "token"),
		srv:       srv,
	}
	n.newToken(t)
	return n
}

func (n *node) newToken(t *testing.T) {
	tok := mustRun(t, n.srv.Env(), "token", "create", "--node", n.name)
	if err := os.WriteFile(n.tokenFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (n *node) args(extra ...string) []string {
	return append([]string{"sidecar", "--server", n.srv.Addr, "--ca-file", n.srv.CAFile(), "--node", n.name,
		"--token-file", n.tokenFile, "--nss-dir", n.nss, "--state-dir", n.state}, extra...)
}

// start runs the sidecar in the background until the test ends (SIGTERM,
// then wait) and returns its log.
func (n *node) start(t *testing.T, extra ...string) *syncBuffer {
	t.Helper()
	logb := &syncBuffer{}
	cmd := exec.Command(binary, n.args(extra...)...)
	cmd.Stdout, cmd.Stderr = logb, logb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	return logb
}

// once runs `sidecar --once`.
func (n *node) once(t *testing.T, env []string, extra ...string) result {
	t.Helper()
	return run(t, env, n.args(append([]string{"--once"}, extra...)...)...)
}

// certutilL returns nickname -> trust lines of `certutil -L` (a nickname
// listed twice shows "x2").
func certutilL(t *testing.T, nss string) map[string]string {
	t.Helper()
	out := sh(t, "certutil", "-L", "-d", "sql:"+nss)
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.Contains(f[len(f)-1], ",") || strings.HasPrefix(line, "Certificate") {
			continue
		}
		nick := strings.Join(f[:len(f)-1], " ")
		if _, ok := got[nick]; ok {
			got[nick] += " x2"
			continue
		}
		got[nick] = f[len(f)-1]
	}
	return got
}

// serialsUnder lists the serials of the certificates under a nickname.
func serialsUnder(t *testing.T, nss, nick string) []string {
	t.Helper()
	out, err := exec.Command("certutil", "-L", "-d", "sql:"+nss, "-n", nick, "-a").Output()
	if err != nil {
		return nil
	}
	var serials []string
	for _, block := range strings.SplitAfter(string(out), "-----END CERTIFICATE-----\n") {
		if !strings.Contains(block, "BEGIN") {
			continue
		}
		cmd := exec.Command("openssl", "x509", "-noout", "-serial")
		cmd.Stdin = strings.NewReader(block)
		s, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		serials = append(
			serials,
			strings.ToLower(strings.TrimLeft(strings.TrimPrefix(strings.TrimSpace(string(s)), "serial="), "0")),
		)
	}
	return serials
}

// assertNSS checks the database as an operator would with certutil.
func assertNSS(t *testing.T, n *node, caCerts int) string {
	t.Helper()
	got := certutilL(t, n.nss)
	wantCA := "CT,,"
	if caCerts == 2 {
		wantCA = "CT,, x2"
	}
	nick := "ovs_certkey_" + n.name
	if len(got) != 2 || got["ovs_cert_cacert"] != wantCA || got[nick] != "u,u,u" {
		t.Fatalf("certutil -L: %v, want ovs_cert_cacert %s and %s u,u,u", got, wantCA, nick)
	}
	serials := serialsUnder(t, n.nss, nick)
	if len(serials) != 1 {
		t.Fatalf("%s holds %d certificates, want 1", nick, len(serials))
	}
	keys := sh(t, "certutil", "-K", "-d", "sql:"+n.nss)
	if c := len(regexp.MustCompile(`(?m)^<\s*\d+>`).FindAllString(keys, -1)); c != 1 {
		t.Fatalf("certutil -K shows %d keys, want 1:\n%s", c, keys)
	}
	for _, u := range []string{"C", "V"} {
		if out := sh(t, "certutil", "-V", "-d", "sql:"+n.nss, "-n", nick, "-u", u); !strings.Contains(
			out,
			"certificate is valid",
		) {
			t.Fatalf("certutil -V -u %s: %s", u, out)
		}
	}
	for _, f := range []string{"node.pem", "ca.pem"} {
		if _, err := os.Stat(filepath.Join(n.state, f)); err != nil {
			t.Fatalf("PEM copy %s: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(n.state, "node-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node-key.pem mode %v %v", fi.Mode(), err)
	}
	return serials[0]
}

func dbFiles(t *testing.T, nss string) []byte {
	var b []byte
	for _, f := range []string{"cert9.db", "key4.db"} {
		raw, err := os.ReadFile(filepath.Join(nss, f))
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, raw...)
	}
	return b
}

func TestSidecarLifecycle(t *testing.T) {
	srv := startServer(t, "")
	n := newNode(t, srv, "node-a")

	// First enrolment into an empty directory.
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("first pass: %+v", r)
	}
	first := assertNSS(t, n, 1)
	// A second pass changes nothing.
	before := dbFiles(t, n.nss)
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("second pass: %+v", r)
	}
	if !bytes.Equal(before, dbFiles(t, n.nss)) {
		t.Fatal("a pass with nothing to do modified the NSS database")
	}
	// The server knows what the node holds.
	if show := mustRun(t, srv.Env(), "nodes", "show", "node-a"); !strings.Contains(show, first) ||
		!strings.Contains(show, "ovs_cert_cacert") {
		t.Fatalf("nodes show lacks the inventory:\n%s", show)
	}
	// Forced rotation: exactly one node certificate, the new one.
	mustRun(t, srv.Env(), "rotate", "--node", "node-a")
	time.Sleep(200 * time.Millisecond)
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("pass after rotate: %+v", r)
	}
	second := assertNSS(t, n, 1)
	if second == first {
		t.Fatal("rotation did not replace the certificate")
	}
	// A CA renewal reaches the database: both roots under ovs_cert_cacert.
	mustRun(t, srv.Env(), "ca", "renew")
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("pass after CA renewal: %+v", r)
	}
	assertNSS(t, n, 2)
	// A reload command runs after a change and is logged.
	mustRun(t, srv.Env(), "rotate", "--node", "node-a")
	time.Sleep(200 * time.Millisecond)
	marker := filepath.Join(t.TempDir(), "reloaded")
	if r := n.once(t, nil, "--reload-cmd", "touch "+marker); r.Code != 0 ||
		!strings.Contains(r.Stderr, "reload command done") {
		t.Fatalf("pass with reload: %+v", r)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("reload command did not run")
	}
	// No secret in the sidecar's output.
	tok, _ := os.ReadFile(n.tokenFile)
	if _, secret, _ := strings.Cut(strings.TrimSpace(string(tok)), "."); strings.Contains(srv.Log.String(), secret) {
		t.Fatal("the token secret appears in the server log")
	}
}

// TestSidecarKilledAtEachStep: the process dies at each step of an update
// (fault injection) and the next pass converges.
func TestSidecarKilledAtEachStep(t *testing.T) {
	srv := startServer(t, "")
	for _, step := range []string{"cert-stored", "p12-written", "imported", "renamed-new", "deleted-old", "renamed-back"} {
		t.Run(step, func(t *testing.T) {
			n := newNode(t, srv, "node-"+strings.ReplaceAll(step, "-", ""))
			if r := n.once(t, nil); r.Code != 0 {
				t.Fatalf("first pass: %+v", r)
			}
			old := assertNSS(t, n, 1)
			mustRun(t, srv.Env(), "rotate", "--node", n.name)
			time.Sleep(200 * time.Millisecond)
			r := n.once(t, []string{"IPSECCA_FAULT_STEP=" + step})
			if r.Code != 137 {
				t.Fatalf("not killed at %s: %+v", step, r)
			}
			// Still a valid pair for the node somewhere in the database.
			if keys := sh(t, "certutil", "-K", "-d", "sql:"+n.nss); !strings.Contains(keys, "rsa") {
				t.Fatalf("no key left after a kill at %s", step)
			}
			if r := n.once(t, nil); r.Code != 0 {
				t.Fatalf("pass after the kill: %+v", r)
			}
			if now := assertNSS(t, n, 1); now == old && step != "p12-written" && step != "cert-stored" {
				t.Logf("still the old certificate after %s (renewed again next time)", step)
			}
		})
	}
}

// TestSidecarServerDown: with the server away the database stays intact;
// the long-running sidecar backs off (no spinning) and converges when the
// server returns.
func TestSidecarServerDown(t *testing.T) {
	srv := startServer(t, "")
	n := newNode(t, srv, "node-a")
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("first pass: %+v", r)
	}
	first := assertNSS(t, n, 1)
	srv.Stop()
	if r := n.once(t, nil); r.Code != 0 || !strings.Contains(r.Stderr, "server unreachable") {
		t.Fatalf("pass with the server down: %+v", r)
	}
	if got := assertNSS(t, n, 1); got != first {
		t.Fatal("the database changed while the server was down")
	}
	// A running sidecar while the server is down, then back.
	logb := n.start(t, "--max-backoff", "2s")
	time.Sleep(3 * time.Second)
	attempts := strings.Count(logb.String(), "watch stream ended") + strings.Count(logb.String(), "pass failed")
	if attempts > 6 {
		t.Fatalf("the sidecar spins while the server is down: %d attempts in 3 s\n%s", attempts, logb.String())
	}
	srv.Start()
	mustRun(t, srv.Env(), "rotate", "--node", "node-a")
	if !waitNewSerial(t, n, first) {
		t.Fatalf("the running sidecar did not pick up the rotation after the server returned:\n%s", logb.String())
	}
	assertNSS(t, n, 1)
}

// TestSidecarRetriesARefusedRenewal: when the CA refuses the renewal it
// asked for (here its per-node rate limit: one renewal per 10 s), the
// running sidecar keeps its certificate and tries again after its backoff,
// without waiting for another event or its hourly resync.
func TestSidecarRetriesARefusedRenewal(t *testing.T) {
	srv := startServer(t, "", "--limit-per-node", "0.1", "--limit-per-node-burst", "1")
	n := newNode(t, srv, "node-a")
	logb := n.start(t, "--max-backoff", "2s")
	if !waitNewSerial(t, n, "") {
		t.Fatalf("the sidecar did not enrol:\n%s", logb.String())
	}
	first := assertNSS(t, n, 1)
	mustRun(t, srv.Env(), "rotate", "--node", "node-a")
	if !waitNewSerial(t, n, first) {
		t.Fatalf("the first rotation did not reach the node:\n%s", logb.String())
	}
	second := assertNSS(t, n, 1)
	// The node's one renewal of these 10 s is spent: this one is refused.
	mustRun(t, srv.Env(), "rotate", "--node", "node-a")
	if !waitNewSerial(t, n, second) {
		t.Fatalf("the refused renewal was not tried again:\n%s", logb.String())
	}
	if !strings.Contains(logb.String(), "renewal failed") {
		t.Fatalf("the renewal was never refused, so this test proves nothing:\n%s", logb.String())
	}
	assertNSS(t, n, 1)
}

// waitNewSerial waits up to 20 s for the node's NSS entry to hold exactly
// one certificate other than old.
func waitNewSerial(t *testing.T, n *node, old string) bool {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if s := serialsUnder(t, n.nss, "ovs_certkey_"+n.name); len(s) == 1 && s[0] != old {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// TestSidecarRevokedNeedsNewToken: a revoked node re-enrols only after an
// admin re-admits it and with a new token, and says what it needs.
func TestSidecarRevokedNeedsNewToken(t *testing.T) {
	srv := startServer(t, "")
	n := newNode(t, srv, "node-a")
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("first pass: %+v", r)
	}
	first := assertNSS(t, n, 1)
	// A peer's revocation reaches this node's NSS as a CRL.
	peer := newNode(t, srv, "node-p")
	if r := peer.once(t, nil); r.Code != 0 {
		t.Fatalf("peer pass: %+v", r)
	}
	mustRun(t, srv.Env(), "node", "revoke", "node-p")
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("pass after a peer's revocation: %+v", r)
	}
	if crl := sh(t, "crlutil", "-L", "-d", "sql:"+n.nss); !strings.Contains(crl, "ovs_cert_cacert") ||
		!strings.Contains(crl, "CRL") {
		t.Fatalf("crlutil -L after a revocation:\n%s", crl)
	}
	mustRun(t, srv.Env(), "node", "revoke", "node-a")
	r := n.once(t, nil)
	if r.Code != 1 || !strings.Contains(r.Stderr, "ipsecca token create --node node-a") {
		t.Fatalf("pass after revocation with only the used token: %+v", r)
	}
	// No token for a revoked node until an admin re-admits it.
	if r := run(t, srv.Env(), "token", "create", "--node", "node-a"); r.Code == 0 ||
		!strings.Contains(r.Stderr, "ipsecca nodes readmit node-a") {
		t.Fatalf("token create for a revoked node: %+v", r)
	}
	mustRun(t, srv.Env(), "node", "readmit", "node-a")
	n.newToken(t)
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("pass with a new token: %+v", r)
	}
	if got := assertNSS(t, n, 1); got == first {
		t.Fatal("the revoked certificate is still in use")
	}
}

// TestSidecarNeedsToken: without a token the sidecar says exactly what it needs.
func TestSidecarNeedsToken(t *testing.T) {
	srv := startServer(t, "")
	n := newNode(t, srv, "node-b")
	os.Remove(n.tokenFile)
	r := n.once(t, nil)
	if r.Code != 1 || !strings.Contains(r.Stderr, "ipsecca token create --node node-b") {
		t.Fatalf("pass without a token: %+v", r)
	}
}

var _ = context.Background

// TestSidecarOnInitnssDatabase: a database made by `ipsec initnss` (as a
// libreswan host has it) is used as it is.
func TestSidecarOnInitnssDatabase(t *testing.T) {
	srv := startServer(t, "")
	n := newNode(t, srv, "node-a")
	os.MkdirAll(n.nss, 0o700)
	sh(t, "ipsec", "initnss", "--nssdir", n.nss)
	if r := n.once(t, nil); r.Code != 0 || strings.Contains(r.Stderr, "created NSS database") {
		t.Fatalf("pass on an initnss database: %+v", r)
	}
	assertNSS(t, n, 1)
}

func TestSidecarECDSAKey(t *testing.T) {
	srv := startServer(t, "")
	n := newNode(t, srv, "node-e")
	if r := n.once(t, nil, "--key-type", "ecdsa-p256"); r.Code != 0 {
		t.Fatalf("pass: %+v", r)
	}
	assertNSS(t, n, 1)
	if keys := sh(t, "certutil", "-K", "-d", "sql:"+n.nss); !strings.Contains(keys, " ec ") {
		t.Fatalf("certutil -K does not show an EC key:\n%s", keys)
	}
	if r := n.once(t, nil, "--key-type", "dsa"); r.Code != 2 {
		t.Fatalf("bad key type: %+v", r)
	}
}

// TestSidecarFlappingServer: the server is stopped and started again and
// again under a running sidecar: its NSS database always holds a valid
// pair, it does not spin, and it converges on the last rotation.
func TestSidecarFlappingServer(t *testing.T) {
	srv := startServer(t, "")
	n := newNode(t, srv, "node-f")
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("first pass: %+v", r)
	}
	logb := n.start(t, "--max-backoff", "2s")
	valid := func() {
		t.Helper()
		out, err := exec.Command("certutil", "-V", "-d", "sql:"+n.nss, "-n", "ovs_certkey_node-f", "-u", "C").
			CombinedOutput()
		if err != nil || !strings.Contains(string(out), "certificate is valid") {
			t.Fatalf("no valid pair in the NSS database during the flapping: %s", out)
		}
	}
	start := time.Now()
	for i := 0; i < 5; i++ {
		srv.Stop()
		valid()
		time.Sleep(700 * time.Millisecond)
		valid()
		srv.Start()
		time.Sleep(300 * time.Millisecond)
		valid()
	}
	elapsed := time.Since(start).Seconds()
	attempts := strings.Count(logb.String(), "watch stream ended") + strings.Count(logb.String(), "pass failed")
	if float64(attempts) > 3*elapsed {
		t.Fatalf("%d reconnect attempts in %.0f s: the sidecar spins\n%s", attempts, elapsed, logb.String())
	}
	first := serialsUnder(t, n.nss, "ovs_certkey_node-f")
	mustRun(t, srv.Env(), "rotate", "--node", "node-f")
	if !waitNewSerial(t, n, first[0]) {
		t.Fatalf("the sidecar did not converge after the flapping:\n%s", logb.String())
	}
	assertNSS(t, n, 1)
	t.Logf("%d reconnect attempts over %.0f s of flapping; converged", attempts, elapsed)
}
