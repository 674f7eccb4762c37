package bundle

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

var now = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

type issuer struct {
	key  crypto.Signer
	cert *x509.Certificate
}

func newCA(t testing.TB, cn string) *issuer {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	subject := pkix.Name{CommonName: cn, Organization: []string{"example"}}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: subject,
		NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &issuer{key, c}
}

type leafOpts struct {
	cn       string
	dns      []string
	ips      []net.IP
	notAfter time.Time
	rsaBits  int
	sigAlg   x509.SignatureAlgorithm
	ku       x509.KeyUsage
	eku      []x509.ExtKeyUsage
}

func (ca *issuer) leaf(t testing.TB, o leafOpts) (*x509.Certificate, crypto.Signer) {
	var key crypto.Signer
	if o.rsaBits > 0 {
		key, _ = rsa.GenerateKey(rand.Reader, o.rsaBits)
	} else {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if o.notAfter.IsZero() {
		o.notAfter = now.AddDate(1, 0, 0)
	}
	if o.ku == 0 {
		o.ku = x509.KeyUsageDigitalSignature
	}
	if o.eku == nil {
		o.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	subject := pkix.Name{CommonName: o.cn, Organization: []string{"example"}}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: subject,
		NotBefore: now.AddDate(0, -1, 0), NotAfter: o.notAfter,
		DNSNames: o.dns, IPAddresses: o.ips, KeyUsage: o.ku, ExtKeyUsage: o.eku,
		SignatureAlgorithm: o.sigAlg}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func pemOf(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// opensslP12 exports key+cert with openssl: mode "" (OpenSSL 3 default),
// "legacy", "3des", or more flags (e.g. "-iter 3000").
func opensslP12(t testing.TB, cert *x509.Certificate, key crypto.Signer, name, password, mode string) []byte {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: apt-get install openssl (make deps)")
	}
	dir := t.TempDir()
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	os.WriteFile(filepath.Join(dir, "k.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	os.WriteFile(filepath.Join(dir, "c.pem"), pemOf(cert), 0o600)
	args := []string{"pkcs12", "-export", "-in", filepath.Join(dir, "c.pem"), "-inkey", filepath.Join(dir, "k.pem"),
		"-passout", "pass:" + password, "-out", filepath.Join(dir, "b.p12")}
	if name != "" {
		args = append(args, "-name", name)
	}
	switch mode {
	case "legacy":
		args = append(args, "-legacy")
	case "3des":
		args = append(args, "-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1")
	default:
		args = append(args, strings.Fields(mode)...)
	}
	if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "b.p12"))
	return b
}

func TestValidate(t *testing.T) {
	ca := newCA(t, "external ipsec ca")
	other := newCA(t, "another ca")
	good, goodKey := ca.leaf(t, leafOpts{cn: "node1.example.com", dns: []string{"node1.example.com"}, rsaBits: 2048})
	base := func() Input {
		return Input{P12: opensslP12(t, good, goodKey, "left_server", "", ""), CAPEM: pemOf(ca.cert),
			Left: "node1.example.com", Right: "ext.example.com",
			RightSubnet: "10.1.2.3/32", RightCertPEM: pemOf(func() *x509.Certificate {
				c, _ := ca.leaf(t, leafOpts{cn: "ext", dns: []string{"ext.example.com"}})
				return c
			}())}
	}
	mk := func(o leafOpts, name string) []byte {
		c, k := ca.leaf(t, o)
		return opensslP12(t, c, k, name, "", "")
	}
	cases := []struct {
		name   string
		mutate func(in *Input)
		code   string // "" = no error expected
		sev    Severity
	}{
		{"good (OpenSSL 3 default)", func(in *Input) {}, "", ""},
		{"good legacy RC2/3DES", func(in *Input) {
			in.P12 = opensslP12(t, good, goodKey, "left_server", "pw", "legacy")
			in.Password = "pw"
		}, CodeP12PasswordSet, SeverityWarning},
		{"good 3DES only", func(in *Input) {
			in.P12 = opensslP12(t, good, goodKey, "left_server", "pw", "3des")
			in.Password = "pw"
		}, CodeP12PasswordSet, SeverityWarning},
		{"wrong password", func(in *Input) {
			in.P12 = opensslP12(t, good, goodKey, "left_server", "pw", "")
			in.Password = "nope"
		}, CodeP12WrongPassword, SeverityError},
		{"garbage p12", func(in *Input) { in.P12 = []byte("not a p12") }, CodeP12Undecodable, SeverityError},
		{"key does not match", func(in *Input) {
			_, k := ca.leaf(t, leafOpts{cn: "x", rsaBits: 2048})
			p, _ := pkcs12.Modern.Encode(k, good, nil, "")
			in.P12 = p
		}, CodeP12KeyMismatch, SeverityError},
		{"no friendly name", func(in *Input) {
			p, _ := pkcs12.Modern.Encode(goodKey, good, nil, "")
			in.P12 = p
		}, CodeLeftcertMissing, SeverityError},
		{"leftcert other name", func(in *Input) { in.LeftCert = "right_server" }, CodeLeftcertMissing, SeverityError},
		{"other CA", func(in *Input) { in.CAPEM = pemOf(other.cert) }, CodeChainUntrusted, SeverityError},
		{"unreadable ca.pem", func(in *Input) { in.CAPEM = []byte("junk") }, CodeCAUnreadable, SeverityError},
		{"expired", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "n", dns: []string{"node1.example.com"}, notAfter: now.Add(-time.Hour)}, "left_server")
		}, CodeCertExpired, SeverityError},
		{"expires soon", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "n", dns: []string{"node1.example.com"}, notAfter: now.Add(72 * time.Hour)}, "left_server")
		}, CodeCertExpiresSoon, SeverityWarning},
		{"rsa 1024", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "n", dns: []string{"node1.example.com"}, rsaBits: 1024}, "left_server")
		}, CodeWeakKey, SeverityError},
		{"ovs_ CN", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "ovs_node1", dns: []string{"node1.example.com"}}, "left_server")
		}, CodeOVSPrefixCN, SeverityError},
		{"OVS_ friendly name", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "n", dns: []string{"node1.example.com"}}, "OVS_certkey_x")
			in.LeftCert = "OVS_certkey_x"
		}, CodeOVSPrefixNickname, SeverityError},
		{"left not in SAN", func(in *Input) { in.Left = "node2.example.com" }, CodeLeftNotInSAN, SeverityError},
		{"left by wildcard", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "n", dns: []string{"*.example.com"}}, "left_server")
		}, "", ""},
		{"wildcard is one label only (RFC 6125)", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "n", dns: []string{"*.com"}}, "left_server")
			in.Left = "node1.example.com"
		}, CodeLeftNotInSAN, SeverityError},
		{"left as IP SAN", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "n", ips: []net.IP{net.ParseIP("192.0.2.10")}}, "left_server")
			in.Left = "192.0.2.10"
		}, "", ""},
		{"invalid left", func(in *Input) { in.Left = "bad host!" }, CodeLeftInvalid, SeverityError},
		{"right not in right cert", func(in *Input) { in.Right = "elsewhere.example.com" }, CodeRightNotInSAN, SeverityError},
		{"right unchecked", func(in *Input) { in.RightCertPEM = nil }, CodeRightUnchecked, SeverityWarning},
		{"right subnet IPv6", func(in *Input) { in.RightSubnet = "2001:db8::1/128" }, CodeSubnetIPv6, SeverityError},
		{"right subnet /24", func(in *Input) { in.RightSubnet = "10.1.2.0/24" }, CodeSubnetNotHost, SeverityError},
		{"right subnet junk", func(in *Input) { in.RightSubnet = "ten" }, CodeSubnetInvalid, SeverityError},
		{"type", func(in *Input) { in.Type = "tunnle" }, CodeTypeInvalid, SeverityError},
		{"no digitalSignature", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "n", dns: []string{"node1.example.com"}, ku: x509.KeyUsageKeyAgreement}, "left_server")
		}, CodeKeyUsage, SeverityError},
		{"code signing only", func(in *Input) {
			in.P12 = mk(leafOpts{cn: "n", dns: []string{"node1.example.com"},
				eku: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}, "left_server")
		}, CodeExtKeyUsage, SeverityError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := base()
			tc.mutate(&in)
			rep := Validate(in, Options{Now: now})
			if tc.code == "" {
				if rep.Errors != 0 || !rep.OK {
					t.Fatalf("want no error, got %+v", rep.Findings)
				}
				return
			}
			for _, f := range rep.Findings {
				if f.Code == tc.code {
					if f.Severity != tc.sev || f.Message == "" {
						t.Fatalf("%s: severity %s message %q", f.Code, f.Severity, f.Message)
					}
					if (tc.sev == SeverityError) == rep.OK {
						t.Fatalf("OK=%v with an %s finding", rep.OK, tc.sev)
					}
					return
				}
			}
			t.Fatalf("no %s finding in %+v", tc.code, rep.Findings)
		})
	}
}

func TestWeakSignature(t *testing.T) {
	ca := newCA(t, "ca")
	ca.key, _ = rsa.GenerateKey(rand.Reader, 2048)
	tmpl := *ca.cert
	tmpl.PublicKey, tmpl.SignatureAlgorithm, tmpl.SubjectKeyId = nil, 0, nil
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, ca.key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	ca.cert, _ = x509.ParseCertificate(der)
	c, k := ca.leaf(t, leafOpts{cn: "n", dns: []string{"n.example.com"}, sigAlg: x509.SHA1WithRSA})
	if c.SignatureAlgorithm != x509.SHA1WithRSA {
		t.Fatalf("fixture not SHA-1 (%s)", c.SignatureAlgorithm)
	}
	rep := Validate(Input{P12: opensslP12(t, c, k, "left_server", "", ""), CAPEM: pemOf(ca.cert), Left: "n.example.com",
		Right: "x.example.com"}, Options{Now: now})
	if !rep.Has(CodeWeakSignature) {
		t.Fatalf("SHA-1 signature not reported: %+v", rep.Findings)
	}
}

func TestPolicyRoundTripAndRender(t *testing.T) {
	ca := newCA(t, "ca")
	c, k := ca.leaf(t, leafOpts{cn: "n", dns: []string{"node1.example.com"}})
	for _, typ := range []string{"transport", "tunnel"} {
		in := Input{P12: opensslP12(t, c, k, "left_server", "", ""), CAPEM: pemOf(ca.cert), Left: "node1.example.com",
			Right: "ext.example.com", RightSubnet: "10.1.2.3/32", Type: typ, LeftCert: "left_server"}
		files, err := Render(RenderInput{Input: in})
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string][]byte{}
		for _, f := range files {
			byName[f.Name] = f.Content
		}
		var got Input
		if err := ParsePolicy(byName["ipsec-"+typ+"-policy.yaml"], &got); err != nil {
			t.Fatal(err)
		}
		if got.Left != in.Left || got.Right != in.Right || got.RightSubnet != in.RightSubnet || got.Type != typ ||
			got.LeftCert != "left_server" {
			t.Fatalf("round trip: %+v", got)
		}
		var removal Policy
		if err := yaml.UnmarshalStrict(byName["remove-ipsec-policy.yaml"], &removal); err != nil ||
			removal.Spec.DesiredState.Interfaces[0].State != "absent" {
			t.Fatalf("removal policy: %+v %v", removal, err)
		}
		var pol Policy
		if err := yaml.UnmarshalStrict(byName["ipsec-"+typ+"-policy.yaml"], &pol); err != nil {
			t.Fatal(err)
		}
		l := pol.Spec.DesiredState.Interfaces[0].Libreswan
		if pol.APIVersion != "nmstate.io/v1" || l.LeftID != "%fromcert" || l.RightID != "%fromcert" || l.IKEv2 != "insist" ||
			pol.Spec.NodeSelector["kubernetes.io/hostname"] != "node1.example.com" {
			t.Fatalf("policy %+v", pol)
		}
		for _, role := range []string{"master", "worker"} {
			var bu struct {
				Variant, Version string
				Metadata         struct {
					Name   string
					Labels map[string]string
				}
				Storage struct {
					Files []struct {
						Path     string
						Mode     int
						Contents struct{ Source string }
					}
				}
				Systemd struct {
					Units []struct {
						Name, Contents string
						Enabled        bool
					}
				}
			}
			raw := byName["99-ipsec-"+role+"-endpoint-config.bu"]
			if err := yaml.Unmarshal(raw, &bu); err != nil {
				t.Fatal(err)
			}
			if bu.Variant != "openshift" || bu.Metadata.Labels["machineconfiguration.openshift.io/role"] != role ||
				len(bu.Storage.Files) != 3 {
				t.Fatalf("butane %s: %+v", role, bu)
			}
			if !strings.Contains(bu.Systemd.Units[0].Contents, "Before=ipsec.service") ||
				!strings.HasPrefix(bu.Storage.Files[1].Contents.Source, "data:;base64,") {
				t.Fatalf("butane %s unit/file: %+v", role, bu)
			}
			if !strings.Contains(string(raw), "pk12util") && !strings.Contains(string(raw), "pk12util%20") {
				t.Fatalf("butane %s does not import the p12", role)
			}
		}
	}
	if _, err := Render(RenderInput{Input: Input{Password: "x"}}); err == nil {
		t.Fatal("render with a p12 password accepted")
	}
}

func TestParsePolicyRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"not yaml":   ":::",
		"other kind": "kind: ConfigMap",
		"no ipsec": "kind: NodeNetworkConfigurationPolicy\nspec:\n  desiredState:\n" +
			"    interfaces: [{name: eth0, type: ethernet}]",
		"huge": strings.Repeat("a", MaxPolicyBytes+1),
	} {
		var in Input
		if err := ParsePolicy([]byte(doc), &in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

var _ = asn1.ObjectIdentifier{}
