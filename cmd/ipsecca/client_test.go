package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/internal/atomicfile"
)

func selfSignedPair(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ipsecca-admin"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// The CA rewrites its admin pair key first, then certificate: a CLI that
// reads between the two waits for the certificate instead of failing.
func TestLoadKeyPairDuringRewrite(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "admin.pem"), filepath.Join(dir, "admin-key.pem")
	oldCert, _ := selfSignedPair(t)
	newCert, newKey := selfSignedPair(t)
	for path, data := range map[string][]byte{certFile: oldCert, keyFile: newKey} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		time.Sleep(150 * time.Millisecond)
		done <- atomicfile.WriteFile(certFile, newCert, 0o600)
	}()
	pair, err := loadKeyPair(certFile, keyFile)
	if werr := <-done; werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatalf("load during the rewrite: %v", err)
	}
	if got, _ := pem.Decode(newCert); string(pair.Certificate[0]) != string(got.Bytes) {
		t.Error("loaded a certificate other than the rewritten one")
	}

	// A key that stays wrong is still an error, after the retries.
	if err := os.WriteFile(certFile, oldCert, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKeyPair(certFile, keyFile); err == nil {
		t.Error("a mismatched pair loaded")
	}
}
