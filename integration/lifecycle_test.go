package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminRotateAndRevokeCLI (lifecycle point 4): `ipsecca admin rotate`
// replaces the admin credential in the data directory; a copy of the old
// one is refused from then on, and `admin revoke` lists it in the CRL.
func TestAdminRotateAndRevokeCLI(t *testing.T) {
	srv := startServer(t, "")
	env := srv.Env()
	oldDir := t.TempDir()
	for _, f := range []string{"admin.pem", "admin-key.pem"} {
		b, err := os.ReadFile(filepath.Join(srv.DataDir, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(oldDir, f), b, 0o600)
	}
	oldCreds := []string{"--cert", filepath.Join(oldDir, "admin.pem"), "--key", filepath.Join(oldDir, "admin-key.pem")}
	var before struct {
		Certificates []struct{ Serial, State string }
	}
	if err := json.Unmarshal([]byte(mustRun(t, env, "certs", "list", "--kind", "admin", "--json")), &before); err != nil ||
		len(before.Certificates) != 1 {
		t.Fatalf("admin certificates before: %+v %v", before, err)
	}
	oldSerial := before.Certificates[0].Serial

	out := mustRun(t, env, "admin", "rotate")
	if !strings.Contains(out, "no longer authenticates") {
		t.Fatalf("admin rotate: %q", out)
	}
	if fi, err := os.Stat(filepath.Join(srv.DataDir, "admin-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new admin key: %v %v", fi, err)
	}
	// The new credential works; the old copy does not.
	mustRun(t, env, "nodes", "list")
	r := run(t, env, append([]string{"nodes", "list"}, oldCreds...)...)
	if r.Code != 1 || !strings.Contains(r.Stderr, "certificate-superseded") {
		t.Fatalf("old admin credential after rotate: %+v", r)
	}
	// An admin cannot revoke the credential it calls with.
	var after struct {
		Certificates []struct{ Serial, State string }
	}
	json.Unmarshal([]byte(mustRun(t, env, "certs", "list", "--kind", "admin", "--state", "active", "--json")), &after)
	if len(after.Certificates) != 1 || after.Certificates[0].Serial == oldSerial {
		t.Fatalf("active admin certificates after rotate: %+v", after)
	}
	if r := run(t, env, "admin", "revoke", after.Certificates[0].Serial); r.Code != 1 ||
		!strings.Contains(r.Stderr, "rotate it first") {
		t.Fatalf("revoking one's own credential: %+v", r)
	}
	mustRun(t, env, "admin", "revoke", oldSerial, "--reason", "laptop lost")
	crl := filepath.Join(t.TempDir(), "crl.pem")
	mustRun(t, env, "ca", "crl", "--out", crl)
	text := sh(t, "openssl", "crl", "-in", crl, "-noout", "-text")
	if !strings.Contains(strings.ToLower(strings.ReplaceAll(text, ":", "")), strings.TrimLeft(oldSerial, "0")) {
		t.Fatalf("the CRL does not list the revoked admin certificate %s:\n%s", oldSerial, text)
	}
	r = run(t, env, append([]string{"nodes", "list"}, oldCreds...)...)
	if r.Code != 1 || !strings.Contains(r.Stderr, "revoked") {
		t.Fatalf("revoked admin credential: %+v", r)
	}
	if out := mustRun(t, env, "audit", "verify"); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %q", out)
	}
}

// TestNodeForgetCLI (lifecycle point 6): a re-provisioned chassis takes the
// name of a revoked node only after `ipsecca node forget`.
func TestNodeForgetCLI(t *testing.T) {
	srv := startServer(t, "")
	env := srv.Env()
	const chassis = "0a1b2c3d-0000-4000-8000-00000000abcd"
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte(mustRun(t, env, "token", "create", "--node", "worker-1", "--cn", chassis)), 0o600)
	_, csr := opensslCSR(t, dir, "old", "/CN="+strings.ToUpper(chassis))
	mustRun(t, env, srv.enrollArgs("--token-file", tok, csr, filepath.Join(dir, "old.pem"))...)
	if r := run(t, env, "node", "forget", "worker-1"); r.Code != 1 || !strings.Contains(r.Stderr, "not revoked") {
		t.Fatalf("forget before revoke: %+v", r)
	}
	mustRun(t, env, "node", "revoke", "worker-1")
	if r := run(t, env, "token", "create", "--node", "worker-9", "--cn", strings.ToUpper(chassis)); r.Code == 0 {
		t.Fatalf("the revoked node's name (in upper case) given to another node: %+v", r)
	}
	if out := mustRun(t, env, "node", "forget", "worker-1"); !strings.Contains(out, chassis) {
		t.Fatalf("node forget: %q", out)
	}
	os.WriteFile(tok, []byte(mustRun(t, env, "token", "create", "--node", "worker-9", "--cn", chassis)), 0o600)
	_, csr = opensslCSR(t, dir, "new", "/CN="+chassis)
	mustRun(t, env, srv.enrollArgs("--token-file", tok, csr, filepath.Join(dir, "new.pem"))...)
	if subj := sh(t, "openssl", "x509", "-in", filepath.Join(dir, "new.pem"), "-noout", "-subject"); !strings.Contains(
		subj,
		chassis,
	) {
		t.Fatalf("re-provisioned chassis certificate: %s", subj)
	}
}

// TestSidecarRecoversLostRenewal (lifecycle point 2): the CA issued a
// renewal whose reply the sidecar never got. The node's certificate is then
// superseded and refused, but the sidecar renews with its pending key and
// receives that same certificate: no third certificate, no stranded node.
func TestSidecarRecoversLostRenewal(t *testing.T) {
	srv := startServer(t, "")
	n := newNode(t, srv, "node-a")
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("first pass: %+v", r)
	}
	first := assertNSS(t, n, 1)
	// The renewal the sidecar had in flight: its pending key, and the
	// certificate the CA issued for it.
	pending := filepath.Join(n.state, "versions", "pending-key.pem")
	sh(t, "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pending)
	csr := filepath.Join(t.TempDir(), "renew.csr")
	sh(t, "openssl", "req", "-new", "-key", pending, "-subj", "/CN=node-a", "-out", csr)
	lost := filepath.Join(t.TempDir(), "lost.pem")
	mustRun(
		t,
		srv.Env(),
		"renew",
		"--server",
		srv.Addr,
		"--ca-file",
		srv.CAFile(),
		"--cert",
		filepath.Join(n.state, "node.pem"),
		"--key",
		filepath.Join(n.state, "node-key.pem"),
		"--csr",
		csr,
		"--out",
		lost,
	)
	want := strings.TrimPrefix(strings.TrimSpace(sh(t, "openssl", "x509", "-in", lost, "-noout", "-serial")), "serial=")

	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("pass after the lost renewal: %+v", r)
	}
	got := assertNSS(t, n, 1)
	if got == first || !strings.EqualFold(strings.TrimLeft(got, "0"), strings.TrimLeft(want, "0")) {
		t.Fatalf("NSS holds serial %s, want the lost renewal's %s", got, want)
	}
	var list struct {
		Certificates []struct{ Serial, State string }
	}
	json.Unmarshal(
		[]byte(mustRun(t, srv.Env(), "certs", "list", "--node", "node-a", "--kind", "node", "--json")),
		&list,
	)
	if len(list.Certificates) != 2 {
		t.Fatalf(
			"node-a has %d certificates, want 2 (the retry must not mint a third): %+v",
			len(list.Certificates),
			list,
		)
	}
}
