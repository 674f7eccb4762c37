package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipseccav1 "github.com/ipsecca/ipsecca/proto/ipsecca/v1"
	"github.com/ipsecca/ipsecca/store/bolt"
)

func vmRSSMiB(t *testing.T, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// TestHostileRequests: bad requests over the wire get the right code and
// a clear message, the server stays up and its memory stays bounded.
func TestHostileRequests(t *testing.T) {
	srv := startServer(t, "", "--limit-per-node", "0")
	admin, done := adminClient(t, srv)
	defer done()
	caPEM, _ := os.ReadFile(srv.CAFile())
	conn, err := dialTLS(srv.Addr, caPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	node := ipseccav1.NewNodeServiceClient(conn)
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	token := func() string {
		tok, err := admin.CreateToken(ctx, &ipseccav1.CreateTokenRequest{Node: "node-a"})
		if err != nil {
			t.Fatal(err)
		}
		return tok.GetToken()
	}
	good := goCSR(t, key, "node-a", nil)
	// A CSR whose signature comes from another key: the body of one, the
	// signature of the other.
	a, _ := pem.Decode(goCSR(t, key, "node-a", nil))
	b, _ := pem.Decode(goCSR(t, other, "node-a", nil))
	spliced := append([]byte(nil), a.Bytes[:len(a.Bytes)-72]...)
	spliced = append(spliced, b.Bytes[len(b.Bytes)-72:]...)
	var sans []string
	for i := 0; i < 2000; i++ {
		sans = append(sans, fmt.Sprintf("n%04d.example.com", i))
	}
	huge := csrWithSANs(t, key, "node-a", sans)
	cases := []struct {
		name string
		csr  []byte
		code codes.Code
		want string
	}{
		{"garbage bytes", bytes.Repeat([]byte{0xde, 0xad}, 500), codes.InvalidArgument, "csr-malformed"},
		{"truncated PEM", good[:len(good)/2], codes.InvalidArgument, "csr-malformed"},
		{
			"signed by another key",
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: spliced}),
			codes.InvalidArgument,
			"csr-",
		},
		{"huge SAN list", huge, codes.InvalidArgument, "csr-too-large"},
		{"10 MB message", make([]byte, 10<<20), codes.ResourceExhausted, "larger than max"},
	}
	before := vmRSSMiB(t, srv.cmd.Process.Pid)
	for round := 0; round < 20; round++ {
		for _, tc := range cases {
			_, err := node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: token(), CsrPem: tc.csr})
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("%s: %v, want %s with %q", tc.name, err, tc.code, tc.want)
			}
		}
	}
	// Replayed and foreign tokens.
	tok := token()
	first, err := node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok, CsrPem: good})
	if err != nil {
		t.Fatal(err)
	}
	// Replayed with the same key: the same certificate (a lost reply), never a second one.
	again, err := node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok, CsrPem: good})
	if err != nil || again.GetCertificate().GetSerial() != first.GetCertificate().GetSerial() {
		t.Fatalf("token replayed with the same key: %v %v", again.GetCertificate().GetSerial(), err)
	}
	if _, err := node.Enroll(ctx, &ipseccav1.EnrollRequest{Token: tok, CsrPem: goCSR(t, other, "node-a",
		nil)}); status.Code(
		err,
	) != codes.Unauthenticated {
		t.Fatalf("token replayed with another key: %v", err)
	}
	after := vmRSSMiB(t, srv.cmd.Process.Pid)
	if after > before+100 {
		t.Fatalf("server RSS grew from %.0f to %.0f MiB under 100 hostile requests", before, after)
	}
	if _, err := node.GetCABundle(ctx, &ipseccav1.GetCABundleRequest{}); err != nil {
		t.Fatalf("server not serving after the hostile requests: %v", err)
	}
	t.Logf("server RSS %.0f -> %.0f MiB over 100 hostile requests", before, after)
}

// TestNoSecretsInOutputs runs the whole flow (server, admin CLI with
// --json, enrolment, sidecar, bundle validation with a password) and greps
// every output and log for the CA key, the node key, token secrets and
// the PKCS#12 password.
func TestNoSecretsInOutputs(t *testing.T) {
	srv := startServer(t, "", "--log-level", "debug")
	dir := t.TempDir()
	var outputs bytes.Buffer
	runAll := func(env []string, args ...string) {
		r := run(t, env, args...)
		outputs.WriteString(r.Stdout + r.Stderr)
	}
	n := newNode(t, srv, "node-s")
	tok, _ := os.ReadFile(n.tokenFile)
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("sidecar: %+v", r)
	}
	outputs.WriteString(n.once(t, nil).Stderr)
	runAll(srv.Env(), "certs", "list", "--json")
	runAll(srv.Env(), "audit", "list", "--json")
	runAll(srv.Env(), "nodes", "show", "node-s", "--json")
	runAll(srv.Env(), "rotate", "--node", "node-s")
	runAll(nil, n.args("--once")...)
	p12, ca := bundleFixture(t, dir, "endpoint", "left_server", "p12-Secret-Pass")
	runAll(
		nil,
		"bundle",
		"validate",
		"--p12",
		p12,
		"--ca",
		ca,
		"--password",
		"p12-Secret-Pass",
		"--left",
		"node1.example.com",
		"--right",
		"x.example.com",
		"--json",
	)
	runAll(
		nil,
		"bundle",
		"validate",
		"--p12",
		p12,
		"--ca",
		ca,
		"--password",
		"wrong-Secret-Pass",
		"--left",
		"node1.example.com",
		"--right",
		"x.example.com",
	)
	srv.Stop()
	st, err := bolt.Open(srv.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	caMaterial, err := st.CA(context.Background())
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	all := outputs.String() + srv.Log.String()
	secrets := map[string]string{}
	if b, _ := pem.Decode(caMaterial.KeyPEM); b != nil {
		secrets["CA key"] = base64.StdEncoding.EncodeToString(b.Bytes)[:40]
	}
	nodeKey, _ := os.ReadFile(filepath.Join(n.state, "node-key.pem"))
	if b, _ := pem.Decode(nodeKey); b != nil {
		secrets["node key"] = base64.StdEncoding.EncodeToString(b.Bytes)[:40]
	}
	if _, s, ok := strings.Cut(strings.TrimSpace(string(tok)), "."); ok {
		secrets["token secret"] = s
	}
	secrets["p12 password"] = "p12-Secret-Pass"
	secrets["wrong p12 password"] = "wrong-Secret-Pass"
	adminKey, _ := os.ReadFile(filepath.Join(srv.DataDir, "admin-key.pem"))
	if b, _ := pem.Decode(adminKey); b != nil {
		secrets["admin key"] = base64.StdEncoding.EncodeToString(b.Bytes)[:40]
	}
	if len(all) < 1000 {
		t.Fatalf("too little output collected (%d bytes) for the check to mean anything", len(all))
	}
	for what, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("the %s appears in an output or log", what)
		}
	}
}
