package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipsecca/ipsecca/daemon"
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

// The CA records a renewed admin certificate (superseding the old one) and
// then writes it over admin.pem: a command run between the two presents the
// superseded pair, and must not fail for it.
func TestAdminCallDuringPairRenewal(t *testing.T) {
	c := startMeshCA(t)
	certFile, keyFile := filepath.Join(c.dir, daemon.AdminCertFile), filepath.Join(c.dir, daemon.AdminKeyFile)
	read := func() (cert, key []byte) {
		var err1, err2 error
		cert, err1 = os.ReadFile(certFile)
		key, err2 = os.ReadFile(keyFile)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	oldCert, oldKey := read()
	if err := os.Remove(certFile); err != nil { // missing: issued again
		t.Fatal(err)
	}
	if err := c.in.RenewServiceCerts(context.Background()); err != nil {
		t.Fatal(err)
	}
	newCert, newKey := read()
	if bytes.Equal(oldCert, newCert) {
		t.Fatal("the admin certificate was not renewed")
	}
	// The files as the CA leaves them for a moment: the superseded pair.
	if err := errors.Join(os.WriteFile(keyFile, oldKey, 0o600), os.WriteFile(certFile, oldCert, 0o600)); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := c.cli("nodes", "list")
	if code != 1 || !strings.Contains(errOut, "certificate-superseded") {
		t.Fatalf("with the superseded pair only: exit %d %s, want 1 and certificate-superseded", code, errOut)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		os.WriteFile(keyFile, newKey, 0o600)
		os.WriteFile(certFile, newCert, 0o600)
	}()
	if code, _, errOut := c.cli("nodes", "list"); code != 0 {
		t.Fatalf("nodes list while the CA replaces its admin pair: exit %d %s", code, errOut)
	}
}
