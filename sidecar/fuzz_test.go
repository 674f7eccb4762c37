package sidecar

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// Seeds in testdata are real outputs of an ipsecca server: the CA bundle
// after a CA renewal (two roots), a node certificate with its key, and the
// CRL after a node was revoked.
func seed(f *testing.F, name string) []byte {
	f.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzParseBundle: a CA bundle from the server (Watch, Enroll, Renew)
// never panics the parser, and is accepted only with one certificate or
// more, every one parsed.
func FuzzParseBundle(f *testing.F) {
	bundle := seed(f, "bundle.pem")
	f.Add(bundle)
	f.Add(bundle[:len(bundle)/2])
	f.Add(append(bytes.Clone(bundle), "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n"...))
	f.Add(seed(f, "node-key.pem"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		roots, err := parseBundle(b)
		if err != nil {
			return
		}
		if len(roots) == 0 {
			t.Fatal("an empty bundle was accepted")
		}
		for _, r := range roots {
			if r == nil || len(r.Raw) == 0 {
				t.Fatal("a root without DER")
			}
		}
	})
}

var serialRe = regexp.MustCompile(`^-?[0-9a-f]+$`)

// FuzzCRLSerials: a CRL from the server never panics the parser, and every
// serial it yields is hex, one per revoked entry.
func FuzzCRLSerials(f *testing.F) {
	crl := seed(f, "crl.der")
	f.Add(crl)
	f.Add(crl[:len(crl)-10])
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl})) // PEM where DER is due
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, der []byte) {
		parsed, err := x509.ParseRevocationList(der)
		if err != nil {
			return
		}
		serials := revokedSerials(parsed)
		if len(serials) != len(parsed.RevokedCertificateEntries) {
			t.Fatalf("%d serials from a CRL with %d entries", len(serials), len(parsed.RevokedCertificateEntries))
		}
		for _, s := range serials {
			if !serialRe.MatchString(s) {
				t.Fatalf("serial %q", s)
			}
		}
	})
}

// FuzzParsePair: the certificate the server returns for the pending key
// never panics the parser, and is accepted only when it is that key's.
func FuzzParsePair(f *testing.F) {
	cert, key := seed(f, "node.pem"), seed(f, "node-key.pem")
	f.Add(cert)
	f.Add(cert[:len(cert)/2])
	f.Add(seed(f, "bundle.pem"))
	f.Add(append(bytes.Clone(cert), cert...))
	f.Fuzz(func(t *testing.T, certPEM []byte) {
		p, err := parsePair(certPEM, key)
		if err != nil {
			return
		}
		pub, ok := p.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(p.Key.Public()) {
			t.Fatal("a certificate for another key was accepted")
		}
		_ = p.Serial()
	})
}
