package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// bundleFixture makes an external CA, an endpoint cert with SAN
// node1.example.com and its p12 (friendly name left_server) with openssl.
func bundleFixture(t *testing.T, dir, cn, name, pass string) (p12, ca string) {
	t.Helper()
	ca = filepath.Join(dir, "ca.pem")
	if _, err := os.Stat(ca); err != nil {
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
			filepath.Join(dir, "ca.key"),
			"-subj",
			"/O=example/CN=external ca",
			"-days",
			"365",
			"-addext",
			"basicConstraints=critical,CA:TRUE",
			"-addext",
			"keyUsage=critical,keyCertSign,cRLSign",
			"-out",
			ca,
		)
	}
	key, csr := opensslCSR(t, dir, cn, "/O=example/CN="+cn)
	ext := filepath.Join(dir, cn+".ext")
	os.WriteFile(
		ext,
		[]byte(
			"subjectAltName=DNS:node1.example.com\nkeyUsage=digitalSignature,keyEncipherment\n"+
				"extendedKeyUsage=serverAuth,clientAuth\n",
		),
		0o600,
	)
	crt := filepath.Join(dir, cn+".pem")
	sh(
		t,
		"openssl",
		"x509",
		"-req",
		"-in",
		csr,
		"-CA",
		ca,
		"-CAkey",
		filepath.Join(dir, "ca.key"),
		"-CAcreateserial",
		"-days",
		"200",
		"-extfile",
		ext,
		"-out",
		crt,
	)
	p12 = filepath.Join(dir, cn+".p12")
	sh(
		t,
		"openssl",
		"pkcs12",
		"-export",
		"-in",
		crt,
		"-inkey",
		key,
		"-name",
		name,
		"-passout",
		"pass:"+pass,
		"-out",
		p12,
	)
	return p12, ca
}

func TestBundleValidateCLI(t *testing.T) {
	dir := t.TempDir()
	good, ca := bundleFixture(t, dir, "node1", "left_server", "")
	ovs, _ := bundleFixture(t, dir, "ovs_node1", "left_server", "")
	withPass, _ := bundleFixture(t, dir, "node1p", "left_server", "s3cret-pass")
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte("s3cret-pass\n"), 0o600)

	args := func(p12 string, extra ...string) []string {
		return append(
			[]string{
				"bundle",
				"validate",
				"--p12",
				p12,
				"--ca",
				ca,
				"--left",
				"node1.example.com",
				"--right",
				"ext.example.com",
			},
			extra...)
	}
	// A good bundle, checked in a real NSS database too.
	r := run(t, nil, args(good, "--nss-check", "--right-subnet", "10.1.2.3/32")...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "OK: 0 error(s)") || !strings.Contains(r.Stdout, "right-unchecked") {
		t.Fatalf("good bundle: %+v", r)
	}
	// The ovs_ rule, as JSON.
	r = run(t, nil, args(ovs, "--json")...)
	var rep struct {
		OK       bool `json:"ok"`
		Findings []struct{ Code, Severity, Message string }
	}
	if r.Code != 1 || json.Unmarshal([]byte(r.Stdout), &rep) != nil || rep.OK ||
		!strings.Contains(r.Stdout, `"ovs-prefix-cn"`) {
		t.Fatalf("ovs_ bundle: %+v", r)
	}
	// Wrong password: an error finding that says so, exit 1; the password
	// never appears in the output.
	r = run(t, nil, args(withPass, "--password", "wrong-one")...)
	if r.Code != 1 || !strings.Contains(r.Stdout, "p12-wrong-password") {
		t.Fatalf("wrong password: %+v", r)
	}
	r = run(t, nil, args(withPass, "--password-file", pwFile, "--nss-check")...)
	if r.Code != 0 || strings.Contains(r.Stdout+r.Stderr, "s3cret-pass") ||
		!strings.Contains(r.Stdout, "p12-password-not-empty") {
		t.Fatalf("password file: %+v", r)
	}
	// Usage errors exit 2.
	for _, bad := range [][]string{
		{"bundle", "validate", "--ca", ca, "--left", "a", "--right", "b"},
		args(good, "--password", "x", "--password-file", pwFile),
		args(good, "--type", "sideways"),
		{"bundle", "validate", "--p12", good, "--ca", ca},
	} {
		if r := run(t, nil, bad...); r.Code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", bad, r.Code, r.Stderr)
		}
	}
	// --policy takes the names from an existing NNCP; render writes one
	// back that reads the same.
	out := filepath.Join(dir, "out")
	mustRun(
		t,
		nil,
		"bundle",
		"render",
		"--p12",
		good,
		"--ca",
		ca,
		"--left",
		"node1.example.com",
		"--right",
		"ext.example.com",
		"--right-subnet",
		"10.1.2.3/32",
		"--type",
		"tunnel",
		"--out",
		out,
	)
	policy := filepath.Join(out, "ipsec-tunnel-policy.yaml")
	for _, f := range []string{"remove-ipsec-policy.yaml", "99-ipsec-master-endpoint-config.bu",
		"99-ipsec-worker-endpoint-config.bu"} {
		raw, err := os.ReadFile(filepath.Join(out, f))
		var v map[string]any
		if err != nil || yaml.Unmarshal(raw, &v) != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	r = run(t, nil, "bundle", "validate", "--p12", good, "--ca", ca, "--policy", policy, "--json")
	if r.Code != 0 || !strings.Contains(r.Stdout, `"ok": true`) {
		t.Fatalf("validate --policy: %+v", r)
	}
	// Render refuses a bundle with errors and writes nothing.
	out2 := filepath.Join(dir, "out2")
	if r := run(t, nil, "bundle", "render", "--p12", ovs, "--ca", ca, "--left", "node1.example.com", "--right",
		"ext.example.com", "--out", out2); r.Code != 1 {
		t.Fatalf("render of a bad bundle: %+v", r)
	}
	if _, err := os.Stat(out2); err == nil {
		t.Fatal("render wrote files for a bad bundle")
	}
}
