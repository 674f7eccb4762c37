package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// signSubordinate signs the CSR in csrFile as a CA certificate valid for
// years under a new self-signed root; it returns the certificate's and the
// root's PEM.
func signSubordinate(t *testing.T, csrFile string, years int) (sub, root []byte) {
	t.Helper()
	raw, err := os.ReadFile(csrFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Org Root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(20, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, _ := x509.ParseCertificate(rootDER)
	subTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), RawSubject: csr.RawSubject,
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(years, 0, 0), IsCA: true,
		BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	subDER, err := x509.CreateCertificate(rand.Reader, subTmpl, rootCert, csr.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: subDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
}

// init --subordinate makes the key and the request and nothing else;
// serve and init refuse to run on it; ca import takes the signed
// certificate offline (no admin credential yet), after which init runs.
func TestInitSubordinateAndOfflineImport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errOut := cli("init", "--subordinate", "--data-dir", dir, "--org", "example")
	if code != 0 || !strings.Contains(out, "subordinate CA: CN=ipsecca subordinate CA,O=example") ||
		!strings.Contains(out, "ipsecca ca import --data-dir "+dir) {
		t.Fatalf("init --subordinate: %d\n%s%s", code, out, errOut)
	}
	csrFile := filepath.Join(dir, "ca.csr")
	csr, err := os.ReadFile(csrFile)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, _ = cli("init", "--subordinate", "--data-dir", dir); code != 0 ||
		!strings.Contains(out, "made by an earlier init, unchanged") {
		t.Fatalf("init --subordinate again: %d %s", code, out)
	}
	if again, _ := os.ReadFile(csrFile); !bytes.Equal(again, csr) {
		t.Fatal("a second init --subordinate changed ca.csr")
	}
	for _, args := range [][]string{
		{"serve", "--data-dir", dir, "--listen", "127.0.0.1:0"},
		{"init", "--data-dir", dir},
	} {
		code, _, errOut = cli(args...)
		if code != 1 || !strings.Contains(errOut, "the subordinate CA has no certificate yet") {
			t.Fatalf("%s on a subordinate awaiting its certificate: %d %s", args[0], code, errOut)
		}
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "ca.csr ipsecca.db" {
		t.Fatalf("the data directory holds %v before the import, want only ca.csr and ipsecca.db", names)
	}

	sub, root := signSubordinate(t, csrFile, 3)
	work := t.TempDir()
	subFile, rootFile := filepath.Join(work, "sub.pem"), filepath.Join(work, "root.pem")
	os.WriteFile(subFile, sub, 0o644)
	os.WriteFile(rootFile, root, 0o644)
	// Refused: no chain. Usage: store flags on the online route.
	if code, _, errOut = cli("ca", "import", "--data-dir", dir, subFile); code != 1 ||
		!strings.Contains(errOut, "ca-import-chain-root") || !strings.Contains(errOut, "offline: no admin credential") {
		t.Fatalf("import without the chain: %d %s", code, errOut)
	}
	code, out, errOut = cli("ca", "import", "--data-dir", dir, subFile, "--chain", rootFile)
	if code != 0 || !strings.Contains(out, "root               CN=Org Root") ||
		!strings.Contains(out, "node certificates end at the latest") ||
		!strings.Contains(out, "warning: the subordinate CA's certificate ends at") ||
		!strings.Contains(out, "next: start the CA: ipsecca serve --data-dir "+dir) {
		t.Fatalf("ca import: %d\n%s%s", code, out, errOut)
	}
	// Now the CA is whole: init makes the service and admin credentials.
	if code, out, errOut = cli("init", "--data-dir", dir); code != 0 || !strings.Contains(out,
		"root: CN=ipsecca subordinate CA,O=example") {
		t.Fatalf("init after the import: %d %s %s", code, out, errOut)
	}
	bundle, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil || !bytes.Equal(bundle, append(sub, root...)) {
		t.Fatalf("ca.pem is not the subordinate followed by its root: %v", err)
	}
	// A running subordinate's renewal asks the server: store flags are refused there.
	if code, _, errOut = cli("ca", "import", "--data-dir", dir, subFile, "--store", "bolt"); code != 2 ||
		!strings.Contains(errOut, "add --offline") {
		t.Fatalf("store flags without --offline: %d %s", code, errOut)
	}
	// init --subordinate on the imported CA: a renewal request, same subject.
	if code, out, _ = cli("init", "--subordinate", "--data-dir", dir); code != 0 ||
		!strings.Contains(out, "holds a request for its renewal (same key and subject)") {
		t.Fatalf("init --subordinate after the import: %d %s", code, out)
	}
	// A self-signed root is no subordinate.
	rootDir := filepath.Join(t.TempDir(), "root")
	if code, _, errOut = cli("init", "--data-dir", rootDir); code != 0 {
		t.Fatal(errOut)
	}
	if code, _, errOut = cli("init", "--subordinate", "--data-dir", rootDir); code != 1 ||
		!strings.Contains(errOut, "self-signed root, not a subordinate") {
		t.Fatalf("init --subordinate on a root: %d %s", code, errOut)
	}
}
