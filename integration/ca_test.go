package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
)

// opensslDates returns a certificate's NotBefore and NotAfter as openssl reads them.
func opensslDates(t *testing.T, certFile string) (time.Time, time.Time) {
	t.Helper()
	out := sh(t, "openssl", "x509", "-in", certFile, "-noout", "-startdate", "-enddate")
	var nb, na time.Time
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		ts, err := time.Parse("Jan _2 15:04:05 2006 MST", v)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		if k == "notBefore" {
			nb = ts
		} else {
			na = ts
		}
	}
	return nb, na
}

var ovsCN = regexp.MustCompile(`CN=(.+?),`)

// TestEnrolWithOpenSSLCSR: a node enrols with a CSR made by openssl, with
// OpenShift's subject, and gets the 5-year certificate the profile says.
func TestEnrolWithOpenSSLCSR(t *testing.T) {
	srv := startServer(t, "")
	for _, tc := range []struct {
		name   string
		keyArg []string
		ku     string
	}{
		{"rsa", []string{"-newkey", "rsa:2048"}, "Digital Signature, Key Encipherment"},
		{"ecdsa", []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}, "Digital Signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			node := "node-" + tc.name
			token := strings.TrimSpace(mustRun(t, srv.Env(), "token", "create", "--node", node))
			if strings.Contains(token, "\n") || len(token) != 65 {
				t.Fatalf("token create printed %q, want only the token", token)
			}
			_, csr := opensslCSR(
				t,
				dir,
				node,
				"/C=US/O=ovnkubernetes/OU=kind/CN="+node,
				append(tc.keyArg, "-addext", "subjectAltName=DNS:"+node)...)
			out := filepath.Join(dir, node+".pem")
			start := time.Now()
			mustRun(t, nil, srv.enrollArgs("--token", token, csr, out)...)
			if v := sh(t, "openssl", "verify", "-CAfile", srv.CAFile(), out); !strings.Contains(v, ": OK") {
				t.Fatalf("openssl verify: %s", v)
			}
			nb, na := opensslDates(t, out)
			if !na.Equal(nb.AddDate(5, 0, 0)) {
				t.Errorf("validity %s .. %s is not exactly 5 years", nb, na)
			}
			if nb.After(start) || start.Sub(nb) > 10*time.Minute {
				t.Errorf("NotBefore %s is not just before issuance (%s)", nb, start)
			}
			subj := sh(t, "openssl", "x509", "-in", out, "-noout", "-subject", "-nameopt", "RFC2253")
			if strings.TrimSpace(subj) != "subject=CN="+node+",O=ipsecca" {
				t.Errorf("subject %q: want the CA-built CN=%s,O=ipsecca (nothing copied from the CSR)", subj, node)
			}
			if m := ovsCN.FindStringSubmatch(subj); m == nil || m[1] != node {
				t.Errorf("ovs-monitor-ipsec's CN=(.+?), finds %v in %q", m, subj)
			}
			text := sh(t, "openssl", "x509", "-in", out, "-noout", "-text")
			for _, want := range []string{
				"X509v3 Key Usage: critical\n                " + tc.ku + "\n",
				"TLS Web Server Authentication, TLS Web Client Authentication, ipsec Internet Key Exchange",
				"CA:FALSE", "DNS:" + node + "\n", "X509v3 Authority Key Identifier", "X509v3 Subject Key Identifier",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("certificate text lacks %q:\n%s", want, text)
				}
			}
			if strings.Contains(text, "OU") || strings.Contains(text, "C = US") {
				t.Errorf("CSR subject fields were copied:\n%s", text)
			}
			rootText := sh(t, "openssl", "x509", "-in", srv.CAFile(), "-noout", "-text")
			skid := regexp.MustCompile(`Subject Key Identifier: *\n *([0-9A-F:]+)`).FindStringSubmatch(rootText)
			akid := regexp.MustCompile(`Authority Key Identifier: *\n *(?:keyid:)?([0-9A-F:]+)`).
				FindStringSubmatch(text)
			if skid == nil || akid == nil || skid[1] != akid[1] {
				t.Errorf("AKID %v does not equal the root's SKID %v", akid, skid)
			}
			serial := strings.TrimPrefix(
				strings.TrimSpace(sh(t, "openssl", "x509", "-in", out, "-noout", "-serial")),
				"serial=",
			)
			// 20 bytes: 8 of issue time in Unix nanoseconds, then 12 random.
			issued, err := strconv.ParseInt(serial[:min(16, len(serial))], 16, 64)
			if len(serial) != 40 || err != nil || time.Since(time.Unix(0, issued)).Abs() > time.Hour {
				t.Errorf("serial %s is not 20 bytes starting with the issue time", serial)
			}
		})
	}
}

// TestRootProfile: init makes a 10-year root of the chosen key type.
func TestRootProfile(t *testing.T) {
	for _, tc := range []struct{ keyType, want string }{
		{"ecdsa-p256", "prime256v1"}, {"ecdsa-p384", "secp384r1"},
		{"rsa-2048", "(2048 bit)"}, {"rsa-3072", "(3072 bit)"}, {"rsa-4096", "(4096 bit)"},
	} {
		t.Run(tc.keyType, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "ca")
			mustRun(
				t,
				nil,
				"init",
				"--data-dir",
				dir,
				"--ca-key-type",
				tc.keyType,
				"--org",
				"example",
				"--ca-name",
				"example ipsec root",
			)
			ca := filepath.Join(dir, "ca.pem")
			text := sh(t, "openssl", "x509", "-in", ca, "-noout", "-text")
			for _, want := range []string{tc.want, "CA:TRUE, pathlen:0", "X509v3 Basic Constraints: critical",
				"X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign", "X509v3 Subject Key Identifier",
				"Subject: O = example, CN = example ipsec root"} {
				if !strings.Contains(text, want) {
					t.Errorf("root lacks %q:\n%s", want, text)
				}
			}
			nb, na := opensslDates(t, ca)
			if !na.Equal(nb.AddDate(10, 0, 0)) {
				t.Errorf("root validity %s .. %s is not exactly 10 years", nb, na)
			}
			if v := sh(t, "openssl", "verify", "-CAfile", ca, ca); !strings.Contains(v, "OK") {
				t.Errorf("root is not self-signed: %s", v)
			}
		})
	}
}

// TestRestartKeepsRoot: the same data directory keeps the same root.
func TestRestartKeepsRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	init1 := mustRun(t, nil, "init", "--data-dir", dir)
	ca1, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if init2 := mustRun(t, nil, "init", "--data-dir", dir, "--ca-key-type", "rsa-2048"); init2 != init1 {
		t.Fatalf("second init changed the root:\n%s\n%s", init1, init2)
	}
	srv := startServer(t, dir)
	srv.Stop()
	srv.Start()
	ca2, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if string(ca1) != string(ca2) {
		t.Fatal("ca.pem changed across restarts")
	}
	show := mustRun(t, srv.Env(), "ca", "show")
	fp := regexp.MustCompile(`sha256: ([0-9a-f]{64})`).FindStringSubmatch(init1)
	if fp == nil || !strings.Contains(show, fp[1]) {
		t.Fatalf("ca show does not list the init fingerprint %v:\n%s", fp, show)
	}
	if fi, err := os.Stat(filepath.Join(dir, "ipsecca.db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store file mode %v %v", fi.Mode(), err)
	}
}

// TestRenewOverMTLS: renewal with the current certificate, no token.
func TestRenewOverMTLS(t *testing.T) {
	srv := startServer(t, "")
	dir := t.TempDir()
	token := strings.TrimSpace(mustRun(t, srv.Env(), "token", "create", "--node", "node-a"))
	key, csr := opensslCSR(t, dir, "a", "/CN=node-a")
	first := filepath.Join(dir, "a.pem")
	mustRun(t, nil, srv.enrollArgs("--token", token, csr, first)...)

	key2, csr2 := opensslCSR(t, dir, "a2", "/CN=node-a")
	second := filepath.Join(dir, "a2.pem")
	mustRun(
		t,
		nil,
		"renew",
		"--server",
		srv.Addr,
		"--ca-file",
		srv.CAFile(),
		"--cert",
		first,
		"--key",
		key,
		"--csr",
		csr2,
		"--out",
		second,
	)
	_ = key2
	s1 := sh(t, "openssl", "x509", "-in", first, "-noout", "-serial")
	s2 := sh(t, "openssl", "x509", "-in", second, "-noout", "-serial")
	if s1 == s2 {
		t.Fatal("renewal returned the same serial")
	}
	if subj := sh(t, "openssl", "x509", "-in", second, "-noout", "-subject"); !strings.Contains(subj, "CN = node-a") {
		t.Fatalf("renewed subject %s", subj)
	}
	var list struct {
		Certificates []struct{ Serial, State, Node string } `json:"certificates"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, srv.Env(), "certs", "list", "--node", "node-a", "--json")),
		&list); err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, c := range list.Certificates {
		states[c.Serial] = c.State
	}
	hex1 := strings.ToLower(strings.TrimLeft(strings.TrimPrefix(strings.TrimSpace(s1), "serial="), "0"))
	hex2 := strings.ToLower(strings.TrimLeft(strings.TrimPrefix(strings.TrimSpace(s2), "serial="), "0"))
	if states[hex1] != "superseded" || states[hex2] != "active" || len(states) != 2 {
		t.Fatalf("states %v, want %s superseded and %s active", states, hex1, hex2)
	}
	if show := mustRun(t, srv.Env(), "certs", "show", hex2); !strings.Contains(show, "CN=node-a,O=ipsecca") ||
		!strings.Contains(show, "active") {
		t.Fatalf("certs show:\n%s", show)
	}
	// The admin certificate cannot renew a node certificate.
	r := run(
		t,
		nil,
		"renew",
		"--server",
		srv.Addr,
		"--ca-file",
		srv.CAFile(),
		"--cert",
		filepath.Join(srv.DataDir, "admin.pem"),
		"--key",
		filepath.Join(srv.DataDir, "admin-key.pem"),
		"--csr",
		csr2,
		"--out",
		filepath.Join(dir, "x.pem"),
	)
	if r.Code != 1 || !strings.Contains(r.Stderr, "PermissionDenied") {
		t.Fatalf("renew with the admin cert: %+v", r)
	}
	// A certificate from another CA (same name) is refused.
	sh(
		t,
		"openssl",
		"req",
		"-x509",
		"-newkey",
		"ec",
		"-pkeyopt",
		"ec_paramgen_curve:P-256",
		"-nodes",
		"-keyout",
		filepath.Join(dir, "rogue.key"),
		"-subj",
		"/O=ipsecca/CN=node-a",
		"-days",
		"1",
		"-out",
		filepath.Join(dir, "rogue.pem"),
	)
	r = run(
		t,
		nil,
		"renew",
		"--server",
		srv.Addr,
		"--ca-file",
		srv.CAFile(),
		"--cert",
		filepath.Join(dir, "rogue.pem"),
		"--key",
		filepath.Join(dir, "rogue.key"),
		"--csr",
		csr2,
		"--out",
		filepath.Join(dir, "y.pem"),
	)
	if r.Code != 1 || !strings.Contains(r.Stderr, "Unauthenticated") {
		t.Fatalf("renew with a foreign cert: %+v", r)
	}
	for _, f := range []string{"x.pem", "y.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s written despite the refusal", f)
		}
	}
}

// goCSR builds a CSR in Go (for what openssl cannot easily make).
func goCSR(t *testing.T, key any, cn string, mutate func(der []byte)) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(
		rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}},
		key,
	)
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(der)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// TestDenialsOverTheWire: every denial reason, its gRPC code and exit
// status; nothing written, no secret in any output.
func TestDenialsOverTheWire(t *testing.T) {
	srv := startServer(t, "", "--limit-per-node", "0")
	dir := t.TempDir()
	newToken := func(node string, extra ...string) string {
		return strings.TrimSpace(
			mustRun(t, srv.Env(), append([]string{"token", "create", "--node", node}, extra...)...),
		)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, goodCSR := opensslCSR(t, dir, "good", "/CN=node-a")
	uuid := "0f2c41c6-1b64-4f0e-9d5e-8a1f3e0c2b7a"
	// node-x holds the UUID; node-y's token for it is refused at enrolment.
	tokX := newToken("node-x", "--cn", uuid)
	mustRun(
		t,
		nil,
		srv.enrollArgs("--token", tokX, write("x.csr", goCSR(t, p256, uuid, nil)), filepath.Join(dir, "x.pem"))...)

	// Two tokens for one name made before either enrols: the second node
	// to enrol is refused.
	uuid2 := "0f2c41c6-1b64-4f0e-9d5e-8a1f3e0c2b7b"
	tokY := newToken("node-y", "--cn", uuid2)
	tokX2 := newToken("node-x2", "--cn", uuid2)
	mustRun(
		t,
		nil,
		srv.enrollArgs("--token", tokX2, write("x2.csr", goCSR(t, p256, uuid2, nil)), filepath.Join(dir, "x2.pem"))...)

	used := newToken("node-a")
	mustRun(t, nil, srv.enrollArgs("--token", used, goodCSR, filepath.Join(dir, "ok.pem"))...)
	short := newToken("node-a", "--ttl", "1s")
	time.Sleep(1100 * time.Millisecond)
	id := strings.SplitN(used, ".", 2)[0]

	var bigSANs []string
	for i := range 600 {
		bigSANs = append(bigSANs, "DNS:n"+strings.Repeat("x", 20)+string(rune('a'+i%26)))
	}
	cases := []struct {
		name   string
		token  string
		csr    string
		code   string
		reason string
	}{
		{"garbage token", "garbage", goodCSR, "Unauthenticated", "token-invalid"},
		{"wrong secret", id + "." + strings.Repeat("0", 48), goodCSR, "Unauthenticated", "token-invalid"},
		// A used token with another key (the same key would get the
		// certificate already issued: a retry after a lost reply).
		{"token used", used, write("other-key.csr", goCSR(t, p256, "node-a", nil)), "Unauthenticated", "token-used"},
		{"token expired", short, goodCSR, "Unauthenticated", "token-expired"},
		{
			"bad signature",
			newToken("node-a"),
			write("sig.csr", goCSR(t, p256, "node-a", func(der []byte) { der[len(der)-5] ^= 0xff })),
			"InvalidArgument",
			"csr-signature-invalid",
		},
		{
			"rsa 1024",
			newToken("node-a"),
			write("rsa1024.csr", goCSR(t, rsa1024, "node-a", nil)),
			"InvalidArgument",
			"key-weak",
		},
		{
			"ed25519",
			newToken("node-a"),
			write("ed.csr", goCSR(t, ed, "node-a", nil)),
			"InvalidArgument",
			"key-unsupported",
		},
		{
			"p521",
			newToken("node-a"),
			write("p521.csr", goCSR(t, p521, "node-a", nil)),
			"InvalidArgument",
			"key-unsupported",
		},
		{"CA:TRUE", newToken("node-a"), func() string {
			_, c := opensslCSR(t, dir, "ca", "/CN=node-a", "-addext", "basicConstraints=critical,CA:TRUE")
			return c
		}(), "InvalidArgument", "ca-requested"},
		{
			"ovs_ CN",
			newToken("node-a"),
			func() string { _, c := opensslCSR(t, dir, "ovs", "/CN=ovs_node-a"); return c }(),
			"InvalidArgument",
			"cn-ovs-prefix",
		},
		{
			"OVS_ CN",
			newToken("node-a"),
			func() string { _, c := opensslCSR(t, dir, "ovs2", "/CN=OVS_x"); return c }(),
			"InvalidArgument",
			"cn-ovs-prefix",
		},
		{
			"invalid CN",
			newToken("node-a"),
			func() string { _, c := opensslCSR(t, dir, "inv", "/CN=Node_A!"); return c }(),
			"InvalidArgument",
			"cn-invalid",
		},
		{
			"other node's CN",
			newToken("node-a"),
			func() string { _, c := opensslCSR(t, dir, "b", "/CN=node-b"); return c }(),
			"PermissionDenied",
			"cn-not-callers-node",
		},
		{"extra DNS SAN", newToken("node-a"), func() string {
			_, c := opensslCSR(t, dir, "san", "/CN=node-a", "-addext", "subjectAltName=DNS:node-a,DNS:node-b")
			return c
		}(), "InvalidArgument", "san-not-allowed"},
		{"IP SAN", newToken("node-a"), func() string {
			_, c := opensslCSR(t, dir, "ip", "/CN=node-a", "-addext", "subjectAltName=IP:10.0.0.1")
			return c
		}(), "InvalidArgument", "san-not-allowed"},
		{
			"name held by another node",
			tokY,
			write("y.csr", goCSR(t, p256, uuid2, nil)),
			"AlreadyExists",
			"name-held-by-other-node",
		},
		{"csr too large", newToken("node-a"), func() string {
			_, c := opensslCSR(t, dir, "big", "/CN=node-a", "-addext", "subjectAltName="+strings.Join(bigSANs, ","))
			return c
		}(), "InvalidArgument", "csr-too-large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "denied.pem")
			r := run(t, nil, srv.enrollArgs("--token", tc.token, tc.csr, out)...)
			want := 1
			if tc.code == "InvalidArgument" { // the request is wrong: a usage error, as if checked locally
				want = 2
			}
			if r.Code != want || !strings.Contains(r.Stderr, tc.code+": denied ("+tc.reason+")") {
				t.Fatalf("exit %d, stderr %q; want exit %d with %s and reason %s", r.Code, r.Stderr, want, tc.code,
					tc.reason)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatal("a certificate file was written")
			}
			if _, secret, ok := strings.Cut(tc.token, "."); ok && strings.Contains(r.Stderr, secret) {
				t.Fatal("the token secret appears in the error")
			}
		})
	}
	// A CSR that is not PEM is refused by the CLI itself, naming the file,
	// before the token is spent.
	garbage := write("garbage.csr", []byte("hello"))
	if r := run(t, nil, srv.enrollArgs("--token", newToken("node-a"), garbage, filepath.Join(dir, "g.pem"))...); r.Code != 2 ||
		!strings.Contains(r.Stderr, "ipsecca enroll: --csr "+garbage+": not a PEM certificate request") {
		t.Fatalf("garbage CSR: %+v", r)
	}
	// A token for a name another node holds is refused when it is made.
	r := run(t, srv.Env(), "token", "create", "--node", "node-y", "--cn", uuid)
	if r.Code != 1 || !strings.Contains(r.Stderr, "AlreadyExists: denied (name-held-by-other-node)") {
		t.Fatalf("token for a held name: %+v", r)
	}
	// ovs_ node names are refused at token creation too.
	if r := run(t, srv.Env(), "token", "create", "--node", "ovs_x"); r.Code != 2 ||
		!strings.Contains(r.Stderr, "cn-ovs-prefix") {
		t.Fatalf("token for ovs_x: %+v", r)
	}
	// Every denial of a recognised credential is in the audit log with its
	// reason; anonymous junk (token-invalid: garbage, wrong secret) is not:
	// anyone could fill the log with it.
	var events struct {
		Events []struct{ Reason string } `json:"events"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, srv.Env(), "audit", "list", "--type", "request.denied", "--json")),
		&events); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, e := range events.Events {
		reasons[e.Reason] = true
	}
	for _, tc := range cases {
		if anonymous := tc.reason == "token-invalid"; tc.reason != "" && reasons[tc.reason] == anonymous {
			t.Errorf("audit event for %s: %v, want %v", tc.reason, reasons[tc.reason], !anonymous)
		}
	}
	// No token secret in the server log.
	for _, tok := range []string{used, short, tokX} {
		if _, secret, _ := strings.Cut(tok, "."); strings.Contains(srv.Log.String(), secret) {
			t.Fatal("a token secret appears in the server log")
		}
	}
}

// TestAdminNeedsAdmin: admin calls with a node certificate or none; the
// standard health and reflection services.
func TestAdminNeedsAdmin(t *testing.T) {
	srv := startServer(t, "")
	dir := t.TempDir()
	token := strings.TrimSpace(mustRun(t, srv.Env(), "token", "create", "--node", "node-a"))
	key, csr := opensslCSR(t, dir, "a", "/CN=node-a")
	cert := filepath.Join(dir, "a.pem")
	mustRun(t, nil, srv.enrollArgs("--token", token, csr, cert)...)
	r := run(t, nil, "certs", "list", "--server", srv.Addr, "--ca-file", srv.CAFile(), "--cert", cert, "--key", key)
	if r.Code != 1 || !strings.Contains(r.Stderr, "PermissionDenied") {
		t.Fatalf("certs list with a node cert: %+v", r)
	}
	caPEM, _ := os.ReadFile(srv.CAFile())
	conn, err := dialTLS(srv.Addr, caPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ipseccav1.NewAdminServiceClient(conn).ListCertificates(ctx,
		&ipseccav1.ListCertificatesRequest{}); status.Code(
		err,
	) != codes.Unauthenticated {
		t.Fatalf("anonymous ListCertificates: %v", err)
	}
	stream, err := grpc_reflection_v1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&grpc_reflection_v1.ServerReflectionRequest{MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), "ipsecca.v1.NodeService") {
		t.Fatalf("reflection lists %v", names)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	_ = pair
}

// TestUsageErrors exit with status 2.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"enroll", "--token", "x"},
		{"token", "create"},
		{"serve", "--no-such-flag"},
		{"init", "--ca-key-type", "dsa-1024", "--data-dir", t.TempDir()},
		{"rotate"},
		{"certs", "show"},
		{"no-such-command"},
	} {
		if r := run(t, nil, args...); r.Code != 2 || r.Stderr == "" {
			t.Errorf("ipsecca %s: exit %d, stderr %q; want 2 with a message", strings.Join(args, " "), r.Code, r.Stderr)
		}
	}
}

// csrWithSANs builds a CSR carrying many DNS SANs.
func csrWithSANs(t *testing.T, key *ecdsa.PrivateKey, cn string, dns []string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(
		rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns},
		key,
	)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
