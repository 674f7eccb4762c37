package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/testclock"
	"github.com/ipsecca/ipsecca/store/bolt"
)

// fakeClock is a settable clock for tests.
// fakeClock is the tests' shared clock.
type fakeClock = testclock.Clock

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newTestAuthority makes an authority over a real bolt store in a temp dir.
func newTestAuthority(t testing.TB, kt KeyType) (*Authority, *bolt.Store, *fakeClock) {
	t.Helper()
	st, err := bolt.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := testclock.New(t0)
	root, created, err := Bootstrap(context.Background(), st, RootConfig{KeyType: kt}, clock)
	if err != nil || !created {
		t.Fatalf("bootstrap: created=%v err=%v", created, err)
	}
	return New(st, root, Config{Clock: clock, Rand: rand.Reader}), st, clock
}

type csrOpts struct {
	key    crypto.Signer
	cn     string
	dns    []string
	ips    []net.IP
	org    string
	extra  []pkix.Extension
	tamper bool
}

func makeCSR(t testing.TB, o csrOpts) []byte {
	t.Helper()
	if o.key == nil {
		o.key = mustECDSA(t, elliptic.P256())
	}
	subj := pkix.Name{CommonName: o.cn}
	if o.org != "" {
		subj.Organization = []string{o.org}
	}
	// Outside FIPS 140-3 enforcement: a CSR signed with a weak key is test input.
	var der []byte
	var err error
	fips140.WithoutEnforcement(func() {
		der, err = x509.CreateCertificateRequest(rand.Reader,
			&x509.CertificateRequest{Subject: subj, DNSNames: o.dns, IPAddresses: o.ips, ExtraExtensions: o.extra},
			o.key)
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.tamper {
		der[len(der)-3] ^= 0xff
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func mustECDSA(t testing.TB, c elliptic.Curve) crypto.Signer {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// mustRSA makes an RSA key of any size: the small ones are test input the
// policy must refuse, so they are made outside FIPS 140-3 enforcement.
func mustRSA(t testing.TB, bits int) crypto.Signer {
	var k *rsa.PrivateKey
	var err error
	fips140.WithoutEnforcement(func() { k, err = rsa.GenerateKey(rand.Reader, bits) })
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustEd25519(t testing.TB) crypto.Signer {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
