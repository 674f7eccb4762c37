package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testIssuer makes a self-signed CA certificate for key.
func testIssuer(t testing.TB, key crypto.Signer, name pkix.Name) *x509.Certificate {
	t.Helper()
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: name, NotBefore: time.Unix(0, 0),
		NotAfter: time.Date(2070, 1, 1, 0, 0, 0, 0, time.UTC), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SubjectKeyId: skid}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCreateLeafMatchesX509 checks that the certificates createLeaf
// encodes itself are, up to the signature, the ones crypto/x509 makes from
// the same template: same TBSCertificate bytes, and a valid signature.
func TestCreateLeafMatchesX509(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Date(2026, 12, 1, 6, 30, 15, 123456789, time.UTC)
	cases := []struct {
		name     string
		caKey    crypto.Signer
		caName   pkix.Name
		pub      crypto.PublicKey
		org, ou  string
		cn       string
		now      time.Time
		years    int
		dnsNames []string
		ips      []net.IP
		// fast is whether createLeaf encodes it itself (an in-memory ECDSA CA key).
		fast bool
	}{
		{name: "node under P-256", caKey: p256, pub: p384.Public(), org: "ipsecca", cn: "worker-0",
			dnsNames: []string{"worker-0"}, fast: true},
		{name: "P-256 node key", caKey: p256, pub: p256.Public(), org: "ipsecca", cn: "n", dnsNames: []string{"n"},
			fast: true},
		{name: "RSA node key adds keyEncipherment", caKey: p256, pub: rsaKey.Public(), org: "ipsecca",
			cn: "rsa-node", dnsNames: []string{"rsa-node"}, fast: true},
		{name: "under P-384", caKey: p384, pub: p256.Public(), org: "Example Corp", cn: "node-1.example.com",
			dnsNames: []string{"node-1.example.com"}, fast: true},
		{name: "server cert with OU and IPs", caKey: p256, pub: p256.Public(), org: "ipsecca", ou: "ipsecca server",
			cn: "ipsecca", dnsNames: []string{"ipsecca", "ipsecca.svc"},
			ips: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.1.1.2").To16()}, fast: true},
		{name: "UTF-8 organisation", caKey: p256, pub: p256.Public(), org: "Ünïcödé & Co*", cn: "x", fast: true},
		{name: "no SAN", caKey: p256, pub: p256.Public(), org: "ipsecca", cn: "admin", fast: true},
		{name: "ends past 2049 (GeneralizedTime)", caKey: p256, pub: p256.Public(), org: "ipsecca", cn: "late",
			now: time.Date(2046, 3, 1, 0, 0, 0, 0, time.UTC), years: 5, fast: true},
		{name: "Ed25519 node key", caKey: p256, pub: edPub, org: "ipsecca", cn: "ed", fast: true},
		{name: "RSA CA key takes crypto/x509", caKey: rsaKey, pub: p256.Public(), org: "ipsecca", cn: "r"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			issuer := testIssuer(t, tc.caKey, pkix.Name{Organization: []string{"ipsecca"}, CommonName: "test CA"})
			at, years := now, NodeYears
			if !tc.now.IsZero() {
				at, years = tc.now, tc.years
			}
			serial, err := newSerial(rand.Reader, at)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, err := leafTemplate(serial, tc.org, tc.ou, tc.cn, tc.pub, at, years, issuer)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.DNSNames, tmpl.IPAddresses = tc.dnsNames, tc.ips
			tmpl.SignatureAlgorithm = signatureAlgorithm(tc.caKey)
			if got := leafProfileOnly(tmpl); got != true {
				t.Fatalf("leafProfileOnly(leafTemplate(...)) = false")
			}
			want, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, tc.pub, tc.caKey)
			if err != nil {
				t.Fatal(err)
			}
			got, err := createLeaf(rand.Reader, tmpl, issuer, tc.pub, tc.caKey)
			if err != nil {
				t.Fatal(err)
			}
			wantCert, err := x509.ParseCertificate(want)
			if err != nil {
				t.Fatal(err)
			}
			gotCert, err := x509.ParseCertificate(got)
			if err != nil {
				t.Fatalf("crypto/x509 cannot parse createLeaf's certificate: %v", err)
			}
			if !bytes.Equal(gotCert.RawTBSCertificate, wantCert.RawTBSCertificate) {
				t.Fatalf("TBSCertificate differs from crypto/x509's:\n got %x\nwant %x", gotCert.RawTBSCertificate,
					wantCert.RawTBSCertificate)
			}
			if gotCert.SignatureAlgorithm != wantCert.SignatureAlgorithm {
				t.Fatalf("signature algorithm %v, want %v", gotCert.SignatureAlgorithm, wantCert.SignatureAlgorithm)
			}
			if err := gotCert.CheckSignatureFrom(issuer); err != nil {
				t.Fatalf("signature does not verify under the issuer: %v", err)
			}
			if _, isEC := tc.caKey.(*ecdsa.PrivateKey); isEC != tc.fast {
				t.Fatalf("case expects fast path %v for %T", tc.fast, tc.caKey)
			}
		})
	}
}

// TestCreateLeafRefusesAnotherIssuersKey checks the key/issuer match
// x509.CreateCertificate makes.
func TestCreateLeafRefusesAnotherIssuersKey(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issuer := testIssuer(t, k1, pkix.Name{CommonName: "CA"})
	tmpl, err := leafTemplate(big.NewInt(7), "o", "", "n", k2.Public(), time.Now(), 1, issuer)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SignatureAlgorithm = x509.ECDSAWithSHA256
	if _, err := createLeaf(rand.Reader, tmpl, issuer, k2.Public(), k2); err == nil {
		t.Fatal("createLeaf signed with a key that is not the issuer's")
	}
}

// FuzzCreateLeaf compares createLeaf with crypto/x509 over arbitrary names.
func FuzzCreateLeaf(f *testing.F) {
	f.Add("ipsecca", "", "worker-0", "worker-0", []byte{10, 1, 1, 2}, int64(1796083200))
	f.Add("Ünï", "ou", "a.b", "", []byte{}, int64(2524608000))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issuer := testIssuer(f, key, pkix.Name{Organization: []string{"ipsecca"}, CommonName: "fuzz CA"})
	f.Fuzz(func(t *testing.T, org, ou, cn, dns string, ip []byte, unix int64) {
		at := time.Unix(unix%4102444800, 0)
		if at.Before(time.Unix(0, 0)) {
			at = time.Unix(0, 0)
		}
		tmpl, err := leafTemplate(big.NewInt(unix&0x7fffffff|1), org, ou, cn, key.Public(), at, 1, issuer)
		if err != nil {
			t.Skip()
		}
		if dns != "" {
			tmpl.DNSNames = []string{dns}
		}
		if len(ip) == 4 || len(ip) == 16 {
			tmpl.IPAddresses = []net.IP{ip}
		}
		tmpl.SignatureAlgorithm = x509.ECDSAWithSHA256
		want, wantErr := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), key)
		got, gotErr := createLeaf(rand.Reader, tmpl, issuer, key.Public(), key)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("crypto/x509 error %v, createLeaf error %v", wantErr, gotErr)
		}
		if wantErr != nil {
			return
		}
		w, _ := x509.ParseCertificate(want)
		g, err := x509.ParseCertificate(got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w.RawTBSCertificate, g.RawTBSCertificate) {
			t.Fatalf("TBSCertificate differs:\n got %x\nwant %x", g.RawTBSCertificate, w.RawTBSCertificate)
		}
	})
}

// BenchmarkCreateLeaf compares signing a node certificate by createLeaf
// with crypto/x509's CreateCertificate (which re-verifies its signature).
func BenchmarkCreateLeaf(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	node, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	issuer := testIssuer(b, key, pkix.Name{Organization: []string{"ipsecca"}, CommonName: "bench CA"})
	tmpl, err := leafTemplate(big.NewInt(99), "ipsecca", "", "worker-0", node.Public(), time.Now(), NodeYears, issuer)
	if err != nil {
		b.Fatal(err)
	}
	tmpl.DNSNames = []string{"worker-0"}
	tmpl.SignatureAlgorithm = x509.ECDSAWithSHA256
	for _, bc := range []struct {
		name string
		sign func() ([]byte, error)
	}{
		{"createLeaf", func() ([]byte, error) { return createLeaf(rand.Reader, tmpl, issuer, node.Public(), key) }},
		{"x509.CreateCertificate", func() ([]byte, error) {
			return x509.CreateCertificate(rand.Reader, tmpl, issuer, node.Public(), key)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.sign(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
