package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// subExt is what the organisation's CA puts in the subordinate's
// certificate (openssl x509 -req -extfile).
const subExt = `basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid:always
`

// orgRoot makes the organisation's root with openssl in dir: root.pem,
// root.key and sub.ext.
func orgRoot(t *testing.T, dir string) (rootPEM, rootKey, ext string) {
	t.Helper()
	rootPEM, rootKey, ext = filepath.Join(dir, "root.pem"), filepath.Join(dir, "root.key"),
		filepath.Join(dir, "sub.ext")
	sh(t, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", rootKey, "-subj", "/O=Example Corp/CN=Example Root", "-days", "7300",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
		"-out", rootPEM)
	if err := os.WriteFile(ext, []byte(subExt), 0o644); err != nil {
		t.Fatal(err)
	}
	return rootPEM, rootKey, ext
}

// opensslSign signs csr with the CA (caPEM, caKey) for days under the
// extfile ext, writing out.
func opensslSign(t *testing.T, csr, caPEM, caKey, ext string, days int, out string) {
	t.Helper()
	sh(t, "openssl", "x509", "-req", "-in", csr, "-CA", caPEM, "-CAkey", caKey, "-CAcreateserial",
		"-days", strconv.Itoa(days), "-extfile", ext, "-out", out)
}

// certutilV checks a node's certificate as NSS (libreswan's library) does.
func certutilV(t *testing.T, nss, nick string) {
	t.Helper()
	for _, u := range []string{"V", "C"} {
		if out := sh(t, "certutil", "-V", "-u", u, "-d", "sql:"+nss, "-n", nick); !strings.Contains(out,
			"certificate is valid") {
			t.Fatalf("certutil -V -u %s -n %s: %s", u, nick, out)
		}
	}
}

// TestSubordinateCA: ipsecca runs under a root made by openssl. init
// --subordinate makes only the key and ca.csr (serve refuses to start),
// openssl signs it, ca import takes it offline, serve issues node
// certificates capped at the subordinate's end that openssl and NSS verify
// up to the root; a renewal of the subordinate is imported over the
// running CA; a certificate from another subordinate of the same root is
// refused by the CA's mTLS.
func TestSubordinateCA(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "ca")
	rootPEM, rootKey, ext := orgRoot(t, dir)

	out := mustRun(t, nil, "init", "--subordinate", "--data-dir", data, "--org", "example")
	if !strings.Contains(out, "subordinate CA: CN=ipsecca subordinate CA,O=example") {
		t.Fatalf("init --subordinate:\n%s", out)
	}
	csr := filepath.Join(data, "ca.csr")
	if req := sh(t, "openssl", "req", "-in", csr, "-noout", "-verify", "-text"); !strings.Contains(req,
		"CA:TRUE, pathlen:0") || !strings.Contains(req, "Certificate Sign, CRL Sign") ||
		!strings.Contains(req, "O = example, CN = ipsecca subordinate CA") {
		t.Fatalf("ca.csr:\n%s", req)
	}
	// No certificate yet: serve refuses, having made nothing.
	if r := run(t, nil, "serve", "--data-dir", data, "--listen", "127.0.0.1:0"); r.Code != 1 ||
		!strings.Contains(r.Stderr, "the subordinate CA has no certificate yet") {
		t.Fatalf("serve before the import: %+v", r)
	}
	if entries, _ := os.ReadDir(data); len(entries) != 2 {
		t.Fatalf("the data directory holds %d entries before the import, want ca.csr and the store", len(entries))
	}

	// A short subordinate (1000 days): node certificates are capped to it.
	sub := filepath.Join(dir, "sub.pem")
	opensslSign(t, csr, rootPEM, rootKey, ext, 1000, sub)
	out = mustRun(t, nil, "ca", "import", "--data-dir", data, sub, "--chain", rootPEM)
	_, subEnd := opensslDates(t, sub)
	if !strings.Contains(out, "CN=Example Root,O=Example Corp") ||
		!strings.Contains(out, "node certificates end at the latest: "+subEnd.UTC().Format("2006-01-02 15:04")) ||
		!strings.Contains(out, "capped to end then") || !strings.Contains(out, "next: start the CA") {
		t.Fatalf("ca import:\n%s", out)
	}
	srv := startServer(t, data)
	// The service certificate chains to the organisation's root (the
	// harness's health check verified it against ca.pem already).
	sh(t, "openssl", "verify", "-CAfile", rootPEM, "-untrusted", sub, filepath.Join(data, "tls", "server.pem"))
	show := mustRun(t, srv.Env(), "ca", "show")
	if !strings.Contains(show, "issuing") || !strings.Contains(show, "issuer") ||
		!strings.Contains(show, "CN=Example Root,O=Example Corp") ||
		!strings.Contains(show, "subordinate CA: node certificates end by "+subEnd.UTC().Format("2006-01-02 15:04")) ||
		!strings.Contains(show, "renew it (ipsecca ca import) before "+
			subEnd.AddDate(-5, 0, 0).UTC().Format("2006-01-02 15:04")) {
		t.Fatalf("ca show:\n%s", show)
	}
	var caInfo struct{ Subordinate bool }
	if js := mustRun(t, srv.Env(), "ca", "show", "--json"); json.Unmarshal([]byte(js), &caInfo) != nil ||
		!caInfo.Subordinate {
		t.Fatalf("ca show --json:\n%s", js)
	}

	// A node enrols through the sidecar.
	n := newNode(t, srv, "node-a")
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("sidecar: %+v", r)
	}
	nodePEM := filepath.Join(n.state, "node.pem")
	sh(t, "openssl", "verify", "-CAfile", rootPEM, "-untrusted", sub, nodePEM)
	if _, na := opensslDates(t, nodePEM); !na.Equal(subEnd) {
		t.Fatalf("node certificate ends %s, want capped at the subordinate's %s", na, subEnd)
	}
	nss := certutilL(t, n.nss)
	if nss["ovs_cert_cacert"] != "CT,," || nss["ovs_certkey_node-a"] != "u,u,u" || len(nss) != 3 {
		t.Fatalf("NSS holds %v: want the root as anchor, the subordinate as an intermediate and the node", nss)
	}
	for nick, trust := range nss {
		if strings.HasPrefix(nick, "ipsecca-intermediate-") && trust != ",," {
			t.Fatalf("the subordinate is trusted %q in NSS, want ,, (an intermediate)", trust)
		}
	}
	certutilV(t, n.nss, "ovs_certkey_node-a")

	// The organisation renews the subordinate (the same ca.csr, 10 years);
	// the running CA takes it over its admin connection.
	bad := filepath.Join(dir, "bad.ext")
	os.WriteFile(bad, []byte("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,cRLSign\n"), 0o644)
	badSub := filepath.Join(dir, "bad.pem")
	opensslSign(t, csr, rootPEM, rootKey, bad, 3650, badSub)
	if r := run(t, srv.Env(), "ca", "import", badSub, "--chain", rootPEM); r.Code != 2 ||
		!strings.Contains(r.Stderr, "InvalidArgument") || !strings.Contains(r.Stderr, "ca-import-key-usage") {
		t.Fatalf("import of a certificate without keyCertSign: %+v", r)
	}
	sub2 := filepath.Join(dir, "sub2.pem")
	opensslSign(t, csr, rootPEM, rootKey, ext, 3650, sub2)
	r := run(t, srv.Env(), "ca", "import", sub2, "--chain", rootPEM)
	if r.Code != 0 || !strings.Contains(r.Stderr, "asking the running CA") ||
		strings.Contains(r.Stdout, "warning:") || !strings.Contains(r.Stdout, "the CA issues under the new") {
		t.Fatalf("renewal over the admin connection: %+v", r)
	}
	// The old node certificate verifies under the renewed subordinate
	// (same key and subject); the node takes the new bundle and, rotated,
	// a certificate of the full 5 years.
	sh(t, "openssl", "verify", "-CAfile", rootPEM, "-untrusted", sub2, nodePEM)
	mustRun(t, srv.Env(), "rotate", "--node", "node-a")
	time.Sleep(200 * time.Millisecond)
	if r := n.once(t, nil); r.Code != 0 {
		t.Fatalf("sidecar after the renewal: %+v", r)
	}
	sh(t, "openssl", "verify", "-CAfile", rootPEM, "-untrusted", sub2, nodePEM)
	if nb, na := opensslDates(t, nodePEM); !na.Equal(nb.AddDate(5, 0, 0)) {
		t.Fatalf("node certificate after the renewal %s..%s, want 5 years", nb, na)
	}
	certutilV(t, n.nss, "ovs_certkey_node-a")

	// Another subordinate of the same root - one with another subject, one
	// with ours - issues a certificate for node-a: the CA refuses it,
	// whether the node sends the sibling along (the chain then verifies up
	// to the root: the store does not know the certificate) or not.
	key, ncsr := opensslCSR(t, dir, "rogue", "/O=example/CN=node-a", "-newkey", "ec",
		"-pkeyopt", "ec_paramgen_curve:P-256")
	leafExt := filepath.Join(dir, "leaf.ext")
	os.WriteFile(leafExt, []byte("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"+
		"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:node-a\n"), 0o644)
	for _, subject := range []string{"/O=example/CN=sibling CA", "/O=example/CN=ipsecca subordinate CA"} {
		sibKey, sibCSR := opensslCSR(t, dir, "sibling", subject, "-newkey", "ec",
			"-pkeyopt", "ec_paramgen_curve:P-256")
		sibling := filepath.Join(dir, "sibling.pem")
		opensslSign(t, sibCSR, rootPEM, rootKey, ext, 3650, sibling)
		rogue := filepath.Join(dir, "rogue.pem")
		opensslSign(t, ncsr, sibling, sibKey, leafExt, 365, rogue)
		sh(t, "openssl", "verify", "-CAfile", rootPEM, "-untrusted", sibling, rogue)
		leaf, _ := os.ReadFile(rogue)
		sib, _ := os.ReadFile(sibling)
		withChain := filepath.Join(dir, "rogue-chain.pem")
		os.WriteFile(withChain, append(leaf, sib...), 0o644)
		for _, cert := range []string{withChain, rogue} {
			r := run(t, nil, "renew", "--server", srv.Addr, "--ca-file", srv.CAFile(), "--cert", cert,
				"--key", key, "--csr", ncsr, "--out", filepath.Join(dir, "stolen.pem"))
			if r.Code != 1 || !strings.Contains(r.Stderr, "Unauthenticated") {
				t.Fatalf("renew with a certificate of %s (%s): %+v", subject, filepath.Base(cert), r)
			}
			if _, err := os.Stat(filepath.Join(dir, "stolen.pem")); err == nil {
				t.Fatal("a certificate was issued to a sibling subordinate's certificate")
			}
		}
	}
}
