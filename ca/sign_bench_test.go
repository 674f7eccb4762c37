package ca

import (
	"crypto/elliptic"
	"crypto/rand"
	"testing"
	"time"

	"github.com/cloudflare/cfssl/config"
	"github.com/cloudflare/cfssl/signer"
	"github.com/cloudflare/cfssl/signer/local"
)

// BenchmarkSignNode is the issuance path without storage: parse and check
// the CSR, run the policy, sign the leaf with crypto/x509.
func BenchmarkSignNode(b *testing.B) {
	a, _, clock := newTestAuthority(b, KeyECDSAP256)
	csrPEM := makeCSR(b, csrOpts{cn: "node-a", key: mustECDSA(b, elliptic.P256())})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			csr, err := ParseCSR(csrPEM)
			if err != nil {
				b.Fatal(err)
			}
			if err := Evaluate(NodePolicy, &Request{CSR: csr, Identity: Identity{Node: "node-a", CN: "node-a"}}); err != nil {
				b.Fatal(err)
			}
			if _, err := a.sign("node", "node-a", "node-a", "", csr.PublicKey, []string{"node-a"}, nil, NodeYears, 0, clock.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSignNodeCFSSL is the same CSR through cfssl's signer/local with
// an equivalent profile, for the record of why ca signs with crypto/x509.
func BenchmarkSignNodeCFSSL(b *testing.B) {
	a, _, _ := newTestAuthority(b, KeyECDSAP256)
	root := a.Root()
	policy := &config.Signing{Default: &config.SigningProfile{
		Usage:  []string{"digital signature", "server auth", "client auth"},
		Expiry: 5 * 365 * 24 * time.Hour,
	}}
	s, err := local.NewSigner(root.Signer, root.Cert, signer.DefaultSigAlgo(root.Signer), policy)
	if err != nil {
		b.Fatal(err)
	}
	csrPEM := makeCSR(b, csrOpts{cn: "node-a", key: mustECDSA(b, elliptic.P256())})
	_ = rand.Reader
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(signer.SignRequest{Request: string(csrPEM), Hosts: []string{"node-a"}}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
